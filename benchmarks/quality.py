"""DNSMOS speed: this project's batched judge (listen/quality.py) against speechmos' own `dnsmos.run`, one clip at a
time, on the same clips in one run; then what `orpheus_dnsmos: true` adds to `axolotl preprocess`.

    python benchmarks/quality.py [--short 24] [--medium 8] [--long-minutes 10] [--preprocess-minutes 3]
                                 [--device cpu] [--skip-reference-long]

Clips are cut from the bundled speech (espeak-ng) joined with pauses, at 16 kHz, each at its own gain: --short
clips of 1-3 s, --medium clips of 5-10 s, one recording of --long-minutes. For each set: audio seconds scored per
second by speechmos (one `dnsmos.run` per clip, as its README shows) and by the judge (all clips in one call),
their ratio, and the largest difference between their scores; before them, how fast the judge's shared layers
run against a float32 matrix product on the same cores (layer_speed). Then preprocess.py's corpus and harness: `axolotl
preprocess` in a fresh process with a cold codes cache, without and with `orpheus_dnsmos: true`, and the time the
scoring adds. The last line printed is one JSON object with those figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from axolotl_orpheus.audio import resample
from axolotl_orpheus.cli.demo import STANDINS_CACHE
from axolotl_orpheus.listen.quality import SAMPLE_RATE, QualityJudge
from preprocess import make_corpus, project_preprocess  # a neighbour: Python puts a script's folder on sys.path
from segment_speed import bundled_speech


def speech_stream(seconds: float, seed: int) -> np.ndarray:
    """The bundled utterances over and over at 16 kHz, each at its own gain, 0.3-1 s of quiet between them."""
    rng = np.random.default_rng(seed)
    utterances = [resample(clip, 24000, SAMPLE_RATE) for _, clip in bundled_speech()]
    parts, total = [], 0
    while total < seconds * SAMPLE_RATE:
        clip = utterances[rng.integers(len(utterances))] * rng.uniform(0.3, 1.0)
        pause = rng.normal(0, 0.002, int(rng.uniform(0.3, 1.0) * SAMPLE_RATE))
        parts += [clip, pause]
        total += len(clip) + len(pause)
    return np.concatenate(parts).astype(np.float32)


def clips_of(count: int, low: float, high: float, seed: int) -> list[np.ndarray]:
    """`count` clips of low..high seconds (uniform), cut from the speech stream at random places."""
    rng = np.random.default_rng(seed)
    stream = speech_stream(count * high + 30, seed)
    lengths = rng.uniform(low, high, count)
    starts = rng.integers(0, len(stream) - int(high * SAMPLE_RATE), count)
    return [stream[start : start + int(length * SAMPLE_RATE)] for start, length in zip(starts, lengths)]


def compare(judge: QualityJudge, clips: list[np.ndarray], reference: bool) -> dict:
    """Audio-s/s of the judge and (with `reference`) of speechmos one clip at a time, and the largest difference."""
    from speechmos import dnsmos

    seconds = sum(len(clip) for clip in clips) / SAMPLE_RATE
    start = time.perf_counter()
    ours = judge.score(clips, SAMPLE_RATE, progress=None)
    spent = time.perf_counter() - start
    figures = {"clips": len(clips), "audio_seconds": round(seconds, 1), "judge_s": round(spent, 2)}
    figures["judge_audio_s_per_s"] = round(seconds / spent, 3)
    if reference:
        start = time.perf_counter()
        theirs = [dnsmos.run(clip, SAMPLE_RATE) for clip in clips]
        spent_reference = time.perf_counter() - start
        names = ("ovrl_mos", "sig_mos", "bak_mos", "p808_mos")
        difference = max(abs(a - b[name]) for score, b in zip(ours, theirs) for a, name in zip(score, names))
        figures.update(
            speechmos_s=round(spent_reference, 2),
            speechmos_audio_s_per_s=round(seconds / spent_reference, 3),
            speedup=round(spent_reference / spent, 2),
            largest_difference=float(difference),
        )
    return figures


def layer_speed(judge: QualityJudge, frames: int = 512, rounds: int = 3) -> dict:
    """How fast P.835's full-resolution layers (the judge's shared work) run, in GFLOP/s, beside torch's float32
    matrix product of 2048 x 2048 on the same cores: how near the machine's speed they already are."""
    import onnx

    from axolotl_orpheus.listen import quality

    model = onnx.load_from_string(quality._model_files()[0])
    shapes = {tensor.name: list(tensor.dims) for tensor in model.graph.initializer}
    per_frame = 0
    for node in model.graph.node:
        if node.op_type == "MaxPool":  # the first pooling ends the full-resolution layers
            break
        if node.op_type == "Conv":  # the STFT's, once per frame; the 3x3 ones, at each of 161 frequency bins
            weights = shapes[node.input[1]]
            per_frame += 2 * int(np.prod(weights)) * (161 if len(weights) == 4 else 1)
    inputs = {quality.FRAMES_NODE: np.random.default_rng(0).standard_normal((1, frames + 8, 320), np.float32) / 10}
    judge.first_layers.run([quality.POOLED_NODE], inputs)
    began = time.perf_counter()
    for _ in range(rounds):
        judge.first_layers.run([quality.POOLED_NODE], inputs)
    layers = per_frame * (frames + 8) * rounds / (time.perf_counter() - began) / 1e9
    square = torch.rand(2048, 2048)
    square @ square
    began = time.perf_counter()
    for _ in range(rounds):
        square @ square
    product = 2 * 2048**3 * rounds / (time.perf_counter() - began) / 1e9
    return {
        "mflop_per_frame": round(per_frame / 1e6, 1),
        "layers_gflops": round(layers),
        "matmul_gflops": round(product),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", type=int, default=24, help="clips of 1-3 s")
    parser.add_argument("--medium", type=int, default=8, help="clips of 5-10 s")
    parser.add_argument("--long-minutes", type=float, default=10, help="one recording this long (0: none)")
    parser.add_argument(
        "--skip-reference-long", action="store_true", help="time speechmos on the short and medium clips only"
    )
    parser.add_argument(
        "--preprocess-minutes", type=float, default=3, help="preprocess.py's corpus, without and with DNSMOS (0: none)"
    )
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from speechmos import dnsmos

    dnsmos.run(clips_of(1, 1, 2, 9)[0], SAMPLE_RATE)  # its models loaded and librosa's first call made, untimed
    judge = QualityJudge(args.device)
    judge.score(clips_of(1, 1, 2, 9), SAMPLE_RATE, progress=None)
    figures: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, load average "
        f"{os.getloadavg()[0]:.1f} at the start",
        "device": args.device,
        "providers": judge.providers,
    }
    figures["layer_speed"] = layer_speed(judge)
    print("layer_speed", figures["layer_speed"], flush=True)
    sets = [("short_1_3_s", args.short, 1, 3, True), ("medium_5_10_s", args.medium, 5, 10, True)]
    for name, count, low, high, reference in sets:
        if count:
            figures[name] = compare(judge, clips_of(count, low, high, 1), reference)
            print(name, figures[name], flush=True)
    if args.long_minutes:
        recording = [speech_stream(args.long_minutes * 60, 2)]
        figures["long_recording"] = compare(judge, recording, not args.skip_reference_long)
        print("long_recording", figures["long_recording"], flush=True)

    if args.preprocess_minutes:
        from axolotl_orpheus.cli.standins import build_standins

        standins = build_standins(STANDINS_CACHE / "standins")
        work = Path(tempfile.mkdtemp(prefix="orpheus-quality-bench-"))
        corpus = make_corpus(work / "corpus", args.preprocess_minutes)
        project = partial(
            project_preprocess,
            corpus=corpus,
            tokenizer=str(standins["tokenizer"]),
            snac_model=str(standins["snac"]),
            base_model=standins["model"],
            device=args.device,
        )
        plain, _ = project(work / "plain", codes_cache=work / "codes-plain")
        scored, _ = project(work / "scored", codes_cache=work / "codes-scored", orpheus_dnsmos=True)
        figures["preprocess"] = {
            "minutes": args.preprocess_minutes,
            "without": plain,
            "with_dnsmos": scored,
            "strategy_added": round(scored["strategy_s"] / plain["strategy_s"] - 1, 3),
            "preprocess_added": round(scored["preprocess_s"] / plain["preprocess_s"] - 1, 3),
        }
        print("preprocess", figures["preprocess"], flush=True)
    figures["machine"] += f", {os.getloadavg()[0]:.1f} at the end; torch {torch.__version__}"
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
