/* SNAC's Snake activation and its depthwise and 1x1 convolutions on CPU, doing the float operations of
 * torch's own paths in the same order, so that the values are the same (kernel_forms.py checks each
 * against torch on the machine before it uses it).
 *
 * Why: torch runs Snake as five passes over tens of MB, oneDNN runs the dilated depthwise convolutions
 * through im2col and gemm and the small 1x1 ones at about a third of the CPU's peak; here the work goes a
 * row or a tile at a time through the caches. Built with -ffp-contract=off, so that only the explicit fused
 * multiply-adds fuse.
 */
#include <math.h>

#define BLOCK 1024

/* MKL's vmsSin, as torch calls it for sin on CPU (passed in from torch's own library). */
typedef void (*vector_sin)(int n, const float *in, float *out, long long mode);

/* out = x + sin(x * alpha)^2 * recip per channel, recip = 1 / (alpha + 1e-9): torch's
 * mul, sin_, pow_(2) (a square), mul_, add_ in order. x and out are (rows, length), row r has channel r % channels. */
void snake(const float *x, const float *alpha, const float *recip, float *out, long rows, long channels,
           long length, vector_sin sin_, long long sin_mode, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long r = 0; r < rows; r++) {
        const float *in = x + r * length;
        float *result = out + r * length, a = alpha[r % channels], q = recip[r % channels], s[BLOCK];
        for (long start = 0; start < length; start += BLOCK) {
            int n = length - start < BLOCK ? (int)(length - start) : BLOCK;
            for (int i = 0; i < n; i++) s[i] = in[start + i] * a;
            sin_(n, s, s, sin_mode);
            for (int i = 0; i < n; i++) {
                float v = s[i] * s[i];
                v = v * q;
                result[start + i] = v + in[start + i];
            }
        }
    }
}

/* A depthwise convolution with an odd kernel of `taps`, dilation `dilation`, stride 1 and zero padding that
 * keeps the length: each output is a chain of fused multiply-adds over the taps in order, starting from the
 * bias (bias_first) or from zero with the bias added after; oneDNN does one or the other depending on
 * its kernel. weight is (channels, taps). */
void depthwise_conv1d(const float *x, const float *weight, const float *bias, float *out, long rows, long channels,
                      long length, int taps, int dilation, int bias_first, int threads) {
    long reach = (long)(taps - 1) / 2 * dilation;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long r = 0; r < rows; r++) {
        const float *in = x + r * length, *w = weight + (r % channels) * taps;
        float b = bias[r % channels], sum[BLOCK];
        for (long start = 0; start < length; start += BLOCK) {
            long n = length - start < BLOCK ? length - start : BLOCK;
            int inside = start >= reach && start + n + reach <= length;
            for (long i = 0; i < n; i++) sum[i] = bias_first ? b : 0.0f;
            for (int k = 0; k < taps; k++) {
                long shift = start - reach + (long)k * dilation;
                if (inside) {
                    for (long i = 0; i < n; i++) sum[i] = fmaf(w[k], in[shift + i], sum[i]);
                } else { /* at the ends: the padding's zeros, still through the fma */
                    for (long i = 0; i < n; i++) {
                        long at = shift + i;
                        sum[i] = fmaf(w[k], at >= 0 && at < length ? in[at] : 0.0f, sum[i]);
                    }
                }
            }
            float *result = out + r * length + start;
            for (long i = 0; i < n; i++) result[i] = bias_first ? sum[i] : sum[i] + b;
        }
    }
}

/* A 1x1 convolution, out[o, t] = a chain of fused multiply-adds over the input channels in order, from the
 * bias (bias_first) or from zero with the bias added after, as oneDNN does with 2 threads or 1 at SNAC's
 * small channel counts. weight is (outputs, inputs). Built with AVX-512 or AVX2 only, as plain C cannot keep
 * a tile of sums in registers, and oneDNN is faster than a kernel that does not. */
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#if defined(__AVX512F__)
typedef __m512 vec;
#define LANES 16
#define OUTS 6 /* a tile of OUTS x VECS sums, plus VECS inputs, fills 29 of the 32 registers */
#define VECS 4
#define vload _mm512_loadu_ps
#define vstore _mm512_storeu_ps
#define vfma _mm512_fmadd_ps
#define vset1 _mm512_set1_ps
#define vadd _mm512_add_ps
#else
typedef __m256 vec;
#define LANES 8
#define OUTS 3 /* 12 sums and 4 inputs in the 16 registers */
#define VECS 4
#define vload _mm256_loadu_ps
#define vstore _mm256_storeu_ps
#define vfma _mm256_fmadd_ps
#define vset1 _mm256_set1_ps
#define vadd _mm256_add_ps
#endif
#define SPAN (LANES * VECS)

/* `outs` (OUTS or 1) outputs from o over SPAN samples from t. */
static inline __attribute__((always_inline)) void pointwise_tile(
    const float *x, const float *weight, const float *bias, float *out, long inputs, long length, long o, long t,
    int outs, int bias_first) {
    vec sum[OUTS][VECS];
    for (int j = 0; j < outs; j++)
        for (int v = 0; v < VECS; v++) sum[j][v] = vset1(bias_first ? bias[o + j] : 0.0f);
    for (long c = 0; c < inputs; c++) {
        const float *in = x + c * length + t;
        vec xs[VECS];
        for (int v = 0; v < VECS; v++) xs[v] = vload(in + v * LANES);
        for (int j = 0; j < outs; j++) {
            vec w = vset1(weight[(o + j) * inputs + c]);
            for (int v = 0; v < VECS; v++) sum[j][v] = vfma(w, xs[v], sum[j][v]);
        }
    }
    for (int j = 0; j < outs; j++)
        for (int v = 0; v < VECS; v++)
            vstore(out + (o + j) * length + t + v * LANES, bias_first ? sum[j][v] : vadd(sum[j][v], vset1(bias[o + j])));
}

void pointwise_conv1d(const float *x, const float *weight, const float *bias, float *out, long batch, long inputs,
                     long outputs, long length, int bias_first, int threads) {
    long spans = length / SPAN, blocks = outputs / OUTS;
#pragma omp parallel for num_threads(threads) schedule(static) collapse(2)
    for (long b = 0; b < batch; b++) {
        for (long s = 0; s < spans; s++) {
            const float *in = x + b * inputs * length;
            float *result = out + b * outputs * length;
            for (long block = 0; block < blocks; block++)
                pointwise_tile(in, weight, bias, result, inputs, length, block * OUTS, s * SPAN, OUTS, bias_first);
            for (long o = blocks * OUTS; o < outputs; o++)
                pointwise_tile(in, weight, bias, result, inputs, length, o, s * SPAN, 1, bias_first);
        }
    }
    for (long b = 0; b < batch; b++) /* the last length % SPAN samples, one at a time */
        for (long o = 0; o < outputs; o++)
            for (long t = spans * SPAN; t < length; t++) {
                float sum = bias_first ? bias[o] : 0.0f;
                for (long c = 0; c < inputs; c++) sum = fmaf(weight[o * inputs + c], x[(b * inputs + c) * length + t], sum);
                out[(b * outputs + o) * length + t] = bias_first ? sum : sum + bias[o];
            }
}
#endif
