"""How clean a clip sounds: DNSMOS, Microsoft's non-intrusive speech quality models, as the `speechmos` package
ships them (ONNX, run with onnxruntime): P.835's SIG (the speech), BAK (the background) and OVRL (overall), and
P.808's MOS, each on a 1-5 scale.

One judge for every caller: the dataset check, `segment --min-dnsmos`, preprocessing's `orpheus_min_dnsmos` and
the scored samples (`eval_orpheus_dnsmos`). It gives speechmos' own scores (tests/test_quality.py holds it to them):
speechmos repeats a clip shorter than 9.01 s (doubling it) until it fills one window, scores windows of 9.01 s one
second apart, skipping those its float arithmetic makes a sample short, and averages them. Nearly all of P.835's
work is in its layers before the first pooling, which see 10 ms frames on a 160-sample grid that every window
shares, so they run once over a clip's frames, a chunk at a time, instead of once per window; only the 4 frames at
either end of a window, where its own zero padding reaches through those layers, and the cheap layers after the
pooling run per window, batched. P.808's mel spectrogram is shared the same way (but for each window's first and
last frame); its network runs per window, since each window is normalised by its own loudest value.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from itertools import islice
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from axolotl_orpheus.audio import resample
from axolotl_orpheus.errors import UserError

LOG = logging.getLogger(__name__)

# speechmos' DNSMOS (speechmos/dnsmos.py), which the scores must equal.
SAMPLE_RATE = 16000
WINDOW_SECONDS = 9.01
WINDOW = int(WINDOW_SECONDS * SAMPLE_RATE)
HOP = SAMPLE_RATE  # between windows
MODELS = "dnsmos_models"
P835_FILE, P808_FILE = "sig_bak_ovr.onnx", "model_v8.onnx"
# Its fits from the P.835 model's raw outputs to the scale of listeners' scores (the non-personalised model's).
FITS = {
    "sig": np.poly1d([-0.08397278, 1.22083953, 0.0052439]),
    "bak": np.poly1d([-0.13166888, 1.60915514, -0.39604546]),
    "ovrl": np.poly1d([-0.06766283, 1.11546468, 0.04602535]),
}
# P.835's layout: frames of 320 samples every 160, 900 to a window; the layers before the first pooling, four
# 3x3 convolutions, reach 4 frames either way.
FRAME_HOP = 160
WINDOW_FRAMES = (WINDOW - FRAME_HOP) // FRAME_HOP
EDGE = 4
FRAMES_NODE = "mos_estimator_logpow/concat:0"  # the frames, (N, F, 320)
POOLED_NODE = "mos_estimator_logpow/conv2d_3/Relu:0"  # the last full-resolution layer, (N, 32, F, 161)
OUTPUT_NODE = "Identity:0"
# P.808 hears a window less its last 10 ms as librosa's mel spectrogram in dB from the window's loudest value.
P808_FFT, P808_MELS, P808_TOP_DB = 321, 120, 80.0
# Windows scored together: on a CPU batching buys no speed and each window holds about 60 MB while it waits and
# runs, so few; a GPU wants many.
CPU_BATCH_WINDOWS, GPU_BATCH_WINDOWS = 4, 32
CHUNK_FRAMES = 512  # frames run through P.835's first layers at a time: their working memory grows with it
# Cut-offs the docs and the dataset check use: Emilia-Pipe keeps clips of OVRL 3.0 and above.
THRESHOLDS = (2.5, 3.0)
OVRL_COLUMN = "dnsmos_ovrl"  # each clip's OVRL, in the metadata.csv `segment --min-dnsmos` writes

INSTALL = "pip install 'axolotl-orpheus[quality]'"


class Scores(NamedTuple):
    """One clip's DNSMOS scores, 1 (bad) to 5 (excellent)."""

    ovrl: float  # P.835 overall quality
    sig: float  # P.835 speech signal: distortion of the voice itself
    bak: float  # P.835 background: noise, hum, music
    p808: float  # P.808 overall quality, a different model


def mel_filters() -> np.ndarray:
    """librosa.filters.mel(sr=16000, n_fft=321, n_mels=120): Slaney's mel scale and area normalisation, float32."""

    def to_mel(hz):
        hz = np.asarray(hz, dtype=np.float64)
        return np.where(hz >= 1000, 15 + np.log(np.maximum(hz, 1e-10) / 1000) / (np.log(6.4) / 27), hz * 3 / 200)

    def to_hz(mel):
        return np.where(mel >= 15, 1000 * np.exp(np.log(6.4) / 27 * (mel - 15)), mel * 200 / 3)

    bins = np.fft.rfftfreq(P808_FFT, 1 / SAMPLE_RATE)
    edges = to_hz(np.linspace(to_mel(0.0), to_mel(SAMPLE_RATE / 2), P808_MELS + 2))
    ramps = np.subtract.outer(edges, bins)
    widths = np.diff(edges)
    weights = np.zeros((P808_MELS, len(bins)), np.float32)
    for mel in range(P808_MELS):
        weights[mel] = np.maximum(0, np.minimum(-ramps[mel] / widths[mel], ramps[mel + 2] / widths[mel + 1]))
    weights *= (2 / (edges[2:] - edges[:-2]))[:, None].astype(np.float32)
    return weights


HANN = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(P808_FFT) / P808_FFT)  # periodic, as librosa's stft takes it
SPECTROGRAM_CHUNK = 4096  # frames transformed at a time


def _decibels(frames: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """10 log10 of the mel power of each row of 321 samples, floored at 1e-10 as librosa's power_to_db floors it."""
    power = np.abs(np.fft.rfft(frames * HANN, axis=1)) ** 2
    return 10 * np.log10(np.maximum(power @ filters.T.astype(np.float64), 1e-10))


class _P808Spectrogram:
    """P.808's mel spectrogram in dB over one clip's frames, computed once: a window's frames (centred, every 160
    samples from its start) are the clip's, but for its first and last, which reach into its zero padding."""

    def __init__(self, samples: np.ndarray, last_start: int, filters: np.ndarray):
        self.samples, self.filters = samples, filters
        # Row i: the frame centred on sample 160 (i + 1), from sample 160 i; the last window's frames 1-898 need up to
        # its frame 898.
        frames = np.lib.stride_tricks.sliding_window_view(samples, P808_FFT)[::FRAME_HOP]
        frames = frames[: last_start // FRAME_HOP + WINDOW_FRAMES - 2]
        self.decibels = np.concatenate(
            [
                _decibels(frames[start : start + SPECTROGRAM_CHUNK].astype(np.float64), filters)
                for start in range(0, len(frames), SPECTROGRAM_CHUNK)
            ]
        )

    def window(self, start: int) -> np.ndarray:
        """P.808's input for the window at `start`: speechmos' librosa mel spectrogram of all but its last 160
        samples (zero-padded, periodic Hann), in dB from its loudest value, floored 80 dB below, then (dB + 40) / 40."""
        half, first = P808_FFT // 2, start // FRAME_HOP
        heard = self.samples[start : start + WINDOW - FRAME_HOP].astype(np.float64)
        first_frame = np.concatenate([np.zeros(half), heard[: half + 1]])
        last_frame = np.concatenate([heard[-2 * half :], [0.0]])
        ends = _decibels(np.stack([first_frame, last_frame]), self.filters)
        decibels = np.concatenate([ends[:1], self.decibels[first : first + WINDOW_FRAMES - 2], ends[1:]])
        decibels = np.maximum(decibels - decibels.max(), -P808_TOP_DB)
        return ((decibels + 40) / 40).astype(np.float32)


def p808_features(window: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """P.808's input for one window of 9.01 s (_P808Spectrogram.window)."""
    return _P808Spectrogram(window, 0, filters).window(0)


def windows(samples: int) -> tuple[int, list[int]]:
    """For a clip of `samples` at 16 kHz: the length speechmos doubles it to, and where its windows start."""
    if samples <= 0:
        return 0, []
    length = samples
    while length < WINDOW:
        length *= 2
    hops = int(np.floor(length / SAMPLE_RATE) - WINDOW_SECONDS) + 1
    starts = []
    for index in range(hops):
        start, end = int(index * HOP), int((index + WINDOW_SECONDS) * HOP)
        if min(end, length) - start >= WINDOW:  # speechmos skips a window its arithmetic makes a sample short
            starts.append(start)
    return length, starts


def _doubled(clip: np.ndarray, length: int) -> np.ndarray:
    while len(clip) < length:
        clip = np.concatenate([clip, clip])
    return clip


def _frames(samples: np.ndarray, first: int, stop: int) -> np.ndarray:
    """P.835's frames first..stop-1 of a clip: 320 samples each, every 160."""
    blocks = samples[first * FRAME_HOP : (stop + 1) * FRAME_HOP].reshape(-1, FRAME_HOP)
    return np.concatenate([blocks[:-1], blocks[1:]], axis=1)


@dataclass
class _FullResolution:
    """P.835's layers before the first pooling over one clip's frames, each frame computed once, a chunk at a time,
    and kept while the windows still to come need it. A frame's value is exact when its 4 neighbours either way are
    the clip's: the frames near a window's ends are the window's own business."""

    session: object
    samples: np.ndarray  # the doubled clip at 16 kHz
    frames: int  # the frames its windows cover
    start: int = 0  # the first frame kept
    kept: np.ndarray = field(default_factory=lambda: np.zeros((32, 0, 161), np.float32))

    def get(self, first: int, stop: int) -> np.ndarray:
        """Frames first..stop-1 (first >= EDGE, stop <= frames - EDGE): (32, stop - first, 161)."""
        end = self.start + self.kept.shape[1]
        if first > self.start:  # earlier frames are behind every window to come
            self.kept = self.kept[:, min(first, end) - self.start :]
            self.start = min(first, end)
        while stop > end:
            begin = max(first, end)
            until = min(begin + CHUNK_FRAMES, self.frames - EDGE)
            frames = _frames(self.samples, begin - EDGE, until + EDGE)
            computed = self.session.run([POOLED_NODE], {FRAMES_NODE: frames[None]})[0][0, :, EDGE:-EDGE]
            if begin > end:
                self.kept, self.start = computed, begin
            else:
                self.kept = np.concatenate([self.kept, computed], axis=1)
            end = self.start + self.kept.shape[1]
        return self.kept[:, first - self.start : stop - self.start]


def _providers(device: str | None) -> list:
    import onnxruntime

    from axolotl_orpheus.devices import pick_device

    chosen = pick_device(device)
    if chosen.type == "cuda":
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            return [("CUDAExecutionProvider", {"device_id": chosen.index or 0}), "CPUExecutionProvider"]
        LOG.info("DNSMOS runs on the CPU: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
    return ["CPUExecutionProvider"]


def _split(model, outputs: list[str], inputs: list[str]):
    """The part of an ONNX model between `inputs` and `outputs`, with every dimension of its inputs free."""
    import onnx

    part = onnx.utils.Extractor(model).extract_model(inputs, outputs)
    del part.graph.value_info[:]  # the shapes inferred for 900 frames
    for tensor in [*part.graph.input, *part.graph.output]:
        for number, dimension in enumerate(tensor.type.tensor_type.shape.dim):
            dimension.Clear()
            dimension.dim_param = f"{tensor.name}_{number}"
    return part


def _model_files() -> tuple[bytes, bytes]:
    """speechmos' P.835 and P.808 models, from its installed package."""
    try:
        folder = resources.files("speechmos") / MODELS
        return (folder / P835_FILE).read_bytes(), (folder / P808_FILE).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as error:
        raise UserError(f"DNSMOS needs the speechmos package's models ({error}): {INSTALL}") from error


def model_digest() -> str:
    """A digest of the models the scores come from, without loading them (what cached scores are filed under)."""
    return hashlib.sha256(b"".join(_model_files())).hexdigest()


class QualityJudge:
    """DNSMOS P.835 and P.808, loaded once from speechmos' package, on the CPU or (with onnxruntime-gpu) a GPU."""

    def __init__(self, device: str | None = None, batch_size: int | None = None) -> None:
        try:
            import onnx
            import onnxruntime
        except ModuleNotFoundError as error:
            raise UserError(f"DNSMOS needs onnx and onnxruntime ({error}): {INSTALL}") from error
        import torch

        p835, p808 = _model_files()
        self.digest = hashlib.sha256(p835 + p808).hexdigest()
        providers = _providers(device)
        model = onnx.shape_inference.infer_shapes(onnx.load_from_string(p835))

        options = onnxruntime.SessionOptions()
        # torch's thread count, which OMP_NUM_THREADS sets per process (as accelerate does for each training process
        # on a CPU): onnxruntime would otherwise take every core in each process.
        options.intra_op_num_threads = torch.get_num_threads()

        def session(part: bytes):
            return onnxruntime.InferenceSession(part, options, providers=providers)

        self.first_layers = session(_split(model, [POOLED_NODE], [FRAMES_NODE]).SerializeToString())
        self.last_layers = session(_split(model, [OUTPUT_NODE], [POOLED_NODE]).SerializeToString())
        self.p808 = session(p808)
        self.providers = self.p808.get_providers()
        on_gpu = self.providers[0] == "CUDAExecutionProvider"
        self.batch_size = batch_size or (GPU_BATCH_WINDOWS if on_gpu else CPU_BATCH_WINDOWS)
        self.filters = mel_filters()
        self._pooled: np.ndarray | None = None  # the per-window layers' input, one batch, filled window by window
        LOG.info(f"DNSMOS on {self.providers[0]}")

    def score(
        self, clips: list[np.ndarray], sample_rate: int, progress: str | None = "Orpheus: DNSMOS"
    ) -> list[Scores | None]:
        """Each clip's scores (None for a clip of no samples), as speechmos gives them for the clip at 16 kHz
        (resampled with soxr). `progress`: the progress bar's label, None for none."""
        clips = [resample(np.asarray(clip, dtype=np.float32), sample_rate, SAMPLE_RATE) for clip in clips]
        plans = [windows(len(clip)) for clip in clips]
        raw: list[list[np.ndarray]] = [[] for _ in clips]
        gathered = self._windows(clips, plans)
        total = sum(len(starts) for _, starts in plans)
        with tqdm(total=total, desc=progress, unit="window", disable=not progress) as bar:
            while batch := list(islice(gathered, self.batch_size)):
                for (owner, *_), scores in zip(batch, self._run(batch)):
                    raw[owner].append(scores)
                bar.update(len(batch))
        return [self._mean(scores) if scores else None for scores in raw]

    def _windows(self, clips: list[np.ndarray], plans: list) -> Iterator[tuple]:
        """Each window's clip, its 8 first and 8 last frames and its P.808 input; its full-resolution frames less 4
        at either end go straight into its place in the next batch (the batches take `batch_size` windows in turn)."""
        if self._pooled is None:
            self._pooled = np.empty((self.batch_size, 32, WINDOW_FRAMES, 161), np.float32)
        count = 0
        for owner, (clip, (length, starts)) in enumerate(zip(clips, plans)):
            if not starts:
                continue
            samples = _doubled(clip, length)
            full = _FullResolution(self.first_layers, samples, starts[-1] // FRAME_HOP + WINDOW_FRAMES)
            spectrogram = _P808Spectrogram(samples, starts[-1], self.filters)
            for start in starts:
                first = start // FRAME_HOP
                last = first + WINDOW_FRAMES
                self._pooled[count % self.batch_size, :, EDGE:-EDGE] = full.get(first + EDGE, last - EDGE)
                ends = [_frames(samples, first, first + 2 * EDGE), _frames(samples, last - 2 * EDGE, last)]
                yield owner, ends, spectrogram.window(start)
                count += 1

    def _run(self, batch: list[tuple]) -> list[np.ndarray]:
        """Each window's raw P.835 (sig, bak, ovrl) and P.808."""
        pooled = self._pooled[: len(batch)]
        # A window's end frames see its own zero padding beyond them: the first 4 of its first 8 frames run alone,
        # the last 4 of its last 8.
        ends = np.stack([frames for _, pair, _ in batch for frames in pair])
        ends = self.first_layers.run([POOLED_NODE], {FRAMES_NODE: ends})[0]
        pooled[:, :, :EDGE] = ends[0::2, :, :EDGE]
        pooled[:, :, -EDGE:] = ends[1::2, :, EDGE:]
        p835 = self.last_layers.run([OUTPUT_NODE], {POOLED_NODE: pooled})[0]
        p808 = self.p808.run(None, {"input_1": np.stack([features for *_, features in batch])})[0]
        return [np.array([*p835[index], p808[index, 0]]) for index in range(len(batch))]

    @staticmethod
    def _mean(windows_scores: list[np.ndarray]) -> Scores:
        """speechmos' clip score: each window's raw P.835 through its fits, then the means over the windows."""
        raw = np.stack(windows_scores)
        sig, bak, ovrl = (FITS[name](raw[:, column]) for column, name in enumerate(("sig", "bak", "ovrl")))
        return Scores(float(np.mean(ovrl)), float(np.mean(sig)), float(np.mean(bak)), float(np.mean(raw[:, 3])))


def optional_judge(device: str | None = None) -> QualityJudge | None:
    """The judge, or None, said in the log, where the [quality] extra is not installed: the scores that need it
    are then NaN."""
    try:
        return QualityJudge(device)
    except UserError as error:
        LOG.warning(f"{error}; without it orpheus_dnsmos is NaN")
        return None
