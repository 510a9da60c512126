/* SNAC's Snake activation and depthwise convolutions on CPU, with the float operations of torch's own paths
 * in the same order, so the values are the same (codec.load_snac checks them on the machine before using them).
 *
 * Why: torch runs Snake as five passes over tens of MB, and oneDNN runs dilated depthwise convolutions
 * through im2col and gemm; here each row of (batch, channel) is done in blocks that stay in L1.
 * Built with -ffp-contract=off, so that only the fmaf calls fuse a multiply and an add.
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
