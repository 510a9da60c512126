"""Preprocessing speed and memory: this project against eager SNAC and the reference recipe, in one run.

    python benchmarks/preprocess.py [--minutes 10] [--clip-seconds S] [--corpus AUDIOFOLDER] [--device cpu|cuda]
                                    [--compile] [--workers N] [--rounds N] [--cluster ray]

Measures, on the same corpus (default: distinct variants of the bundled clips, each at another gain so no
cache can collapse them, --minutes of audio in all; --clip-seconds joins them into longer clips), with the
codes cache cold:
  (a) eager SNAC encode of every clip, one at a time (encode calls only: the limit),
  (b) a straightforward per-row re-implementation of the reference recipe (benchmarks/reference_recipe.py),
  (c) this project's strategy end to end (raw rows in, training rows out: checks, decoding, resampling,
      encoding, framing), inside axolotl's own preprocess in a fresh process; the whole preprocess after
      axolotl's start-up (preprocess_s: adds loading the tokenizer and data and saving) and the whole
      process (wall_s) are reported too;
audio-seconds per second for each, c/a and c/b, the fraction of audio tokens identical between (c) and (a),
then (c) again after a label option change (every code from the cache), and (c) on a tenth of the corpus
to compare peak RSS. With --cluster ray, (c) runs again on both corpora with orpheus_encode_cluster: ray (a Ray
started by the run on this machine, or the cluster in RAY_ADDRESS): its encoding pass against the local one's,
split by a straight line through the two sizes into a fixed start-up cost and a cost per clip, and whether its
rows are the local run's. The last line printed is one JSON object with those figures.

Stock SNAC's speed changes from one run to the next with the state of glibc's heap (docs/performance.md) and
the machine's load; --rounds N runs (a), (b) and (c) N times in turn (each (c) with a cold cache) and
reports each round and the medians: c/a and c/b are the medians of each round's ratios, codes_identical the
lowest round's.

Models default to the offline stand-ins (a real-size SNAC 24 kHz with random weights and a tokenizer with
the Orpheus layout); --snac-model and --tokenizer take real ones.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import soundfile
import torch
import yaml

from axolotl_orpheus import codec, devices, layout
from axolotl_orpheus.audio import SAMPLE_RATE, load_clip
from axolotl_orpheus.cli.demo import BUNDLED_CLIPS, STANDINS_CACHE, demo_config, newest_prepared_dataset
from reference_recipe import reference_row  # a neighbour: Python puts a script's folder on sys.path


def make_corpus(folder: Path, minutes: float, clip_seconds: float = 0.0) -> Path:
    """The bundled clips over and over, each copy at its own gain, until `minutes` of audio; with
    `clip_seconds`, consecutive clips are joined into clips at least that long."""
    with open(Path(str(BUNDLED_CLIPS)) / "metadata.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    clips = [soundfile.read(Path(str(BUNDLED_CLIPS)) / r["file_name"], dtype="float32") for r in rows]
    (rate,) = {rate for _, rate in clips}
    folder.mkdir(parents=True)
    lines, seconds, copy, taken = [], 0.0, 0, 0
    while seconds < minutes * 60:
        first, parts = taken, []
        while not parts or sum(map(len, parts)) < clip_seconds * rate:
            parts.append(clips[taken % len(clips)][0])
            taken += 1
        gain = 0.3 + 0.7 * ((copy * 7919) % 1000) / 1000  # distinct per copy
        name = f"{copy:05d}-{rows[first % len(rows)]['file_name']}"
        soundfile.write(folder / name, np.concatenate(parts) * gain, rate, subtype="FLOAT")
        text = " ".join(rows[i % len(rows)]["text"] for i in range(first, taken))
        lines.append([name, text, rows[first % len(rows)]["speaker"]])
        seconds += sum(map(len, parts)) / rate
        copy += 1
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["file_name", "text", "speaker"], *lines])
    return folder


def read_corpus(folder: Path) -> list[dict]:
    with open(folder / "metadata.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def eager_encode(model, clips: list[np.ndarray], device: str) -> tuple[float, list]:
    """(a): one clip at a time, timing only the encode calls; in IEEE fp32 like the strategy, since with
    cuDNN's default TF32 a GPU's codes are not even reproducible across batch sizes ((b) keeps the default)."""
    codes, spent = [], 0.0
    with torch.inference_mode(), devices.exact_fp32():
        model.encode(torch.from_numpy(clips[0])[None, None].to(device))  # warm-up: CUDA and cuDNN start-up
        for clip in clips:
            x = torch.from_numpy(clip)[None, None].to(device)
            start = time.perf_counter()
            levels = model.encode(x)
            if device == "cuda":
                torch.cuda.synchronize()
            spent += time.perf_counter() - start
            codes.append([level[0].cpu().numpy() for level in levels])
    return spent, codes


def reference_recipe(model, tokenizer, folder: Path, rows: list[dict], device: str) -> float:
    """(b): per row, as the recipe does: decode, resample, encode with .item() per code, dedupe, frame."""
    model = model.to(device)
    start = time.perf_counter()
    for row in rows:
        clip = load_clip(row["file_name"], str(folder))
        reference_row(model, tokenizer, clip, row["text"], row["speaker"], device=device)
    return time.perf_counter() - start


def peak_rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return round(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024, 1)


def run_preprocess(config_path: Path) -> dict:
    """In this process (started for it): axolotl's own config loading and preprocess, timed apart from start-up.

    Peak RSS is this process's own high-water mark (VmHWM: ru_maxrss would carry over the parent's peak
    across exec). Encoding workers, started only for several devices, are not included.
    """
    started = time.perf_counter()
    from axolotl.cli.args import PreprocessCliArgs
    from axolotl.cli.config import load_cfg
    from axolotl.cli.preprocess import do_preprocess

    from axolotl_orpheus.prepare import cluster, encoding
    from axolotl_orpheus.tts import OrpheusTTSStrategy

    imported = time.perf_counter()
    # The strategy's own share (raw rows in, training rows out), apart from axolotl's loading and saving,
    # and within it the encoding pass.
    spent: dict[str, float] = {"strategy_s": 0.0, "encode_s": 0.0}

    def timed(function, figure):
        def run(*args, **kwargs):
            start = time.perf_counter()
            result = function(*args, **kwargs)
            spent[figure] += time.perf_counter() - start
            return result

        return run

    OrpheusTTSStrategy.wrap_dataset = timed(OrpheusTTSStrategy.wrap_dataset, "strategy_s")
    encoding.encode_missing = timed(encoding.encode_missing, "encode_s")
    cluster.encode_missing = timed(cluster.encode_missing, "encode_s")
    cfg = load_cfg(str(config_path), is_preprocess=True)
    if cfg.orpheus_encode_cluster == "ray":  # within the encoding pass: starting Ray (or joining RAY_ADDRESS's)
        import ray

        spent["ray_init_s"] = 0.0
        ray.init = timed(ray.init, "ray_init_s")
    cfg.is_preprocess = True
    loaded = time.perf_counter()
    do_preprocess(cfg, PreprocessCliArgs(download=False))
    done = time.perf_counter()
    return {
        "start_up_s": round(loaded - started, 2),
        "import_s": round(imported - started, 2),
        "preprocess_s": round(done - loaded, 2),
        **{figure: round(seconds, 2) for figure, seconds in spent.items()},
        "peak_rss_mb": peak_rss_mb(),
    }


def project_preprocess(
    out: Path,
    corpus: Path,
    tokenizer: str,
    snac_model: str,
    base_model: Path,
    device: str,
    codes_cache: Path,
    **options,
) -> tuple[dict, Path]:
    """(c): `axolotl preprocess` with `type: axolotl_orpheus.tts` in a fresh process; its figures and output."""
    config = demo_config(out, tokenizer, snac_model, base_model)
    config.update(
        datasets=[{"path": str(corpus), "type": "axolotl_orpheus.tts"}],
        sequence_len=8192,
        shuffle_merged_datasets=False,
        orpheus_device=device,
        orpheus_codes_cache=str(codes_cache),
        **options,
    )
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench.yml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "AXOLOTL_DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, __file__, "--run-preprocess", str(path)], capture_output=True, text=True, env=env, cwd=out
    )
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"axolotl preprocess failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return {**figures, "wall_s": round(wall, 2)}, newest_prepared_dataset(out / "prepared")


def rows_of(prepared: Path) -> int:
    from datasets import load_from_disk

    return len(load_from_disk(str(prepared)))


def same_rows(prepared: Path, other: Path) -> bool:
    from datasets import load_from_disk

    return load_from_disk(str(prepared))["input_ids"] == load_from_disk(str(other))["input_ids"]


def ray_overhead(project, work: Path, corpora: list[tuple[Path, dict, Path]]) -> dict:
    """(c) with orpheus_encode_cluster: ray on each (corpus, its local run's figures, its local rows): the Ray
    encoding pass against the local one's, and, with two corpora, a straight line through the differences:
    start-up (Ray, its actors, SNAC loading) and the cost per clip."""
    runs = []
    for number, (corpus, local, local_prepared) in enumerate(corpora):
        figures, prepared = project(
            work / f"ray-{number}", corpus, codes_cache=work / f"ray-codes-{number}", orpheus_encode_cluster="ray"
        )
        clips = len(read_corpus(corpus))
        identical = same_rows(prepared, local_prepared)
        runs.append(
            {
                "clips": clips,
                "ray_encode_s": figures["encode_s"],
                "local_encode_s": local["encode_s"],
                "ray_init_s": figures["ray_init_s"],
                "ray_preprocess_s": figures["preprocess_s"],
                "local_preprocess_s": local["preprocess_s"],
                "rows_identical": identical,
            }
        )
        print(
            f"(c) on Ray, {clips} clips: encoding pass {figures['encode_s']} s (starting Ray "
            f"{figures['ray_init_s']} s) against {local['encode_s']} s locally; rows identical: {identical}",
            flush=True,
        )
    result = {"runs": runs}
    if len(runs) == 2:
        big, small = runs
        extra = [run["ray_encode_s"] - run["local_encode_s"] for run in runs]
        per_clip = (extra[0] - extra[1]) / (big["clips"] - small["clips"])
        result.update(start_up_s=round(extra[1] - per_clip * small["clips"], 2), per_clip_ms=round(1000 * per_clip, 1))
        print(f"    Ray's overhead: {result['start_up_s']} s to start, {result['per_clip_ms']} ms per clip", flush=True)
    return result


def identical_fraction(prepared: Path, eager_codes: list) -> float:
    """Share of audio tokens in (c)'s rows equal to (a)'s codes framed the same way (dedupe included)."""
    from datasets import load_from_disk

    same = total = 0
    for ids, codes in zip(load_from_disk(str(prepared))["input_ids"], eager_codes):
        ours = layout.speech_frames(ids)
        frames = layout.interleave(*codes)
        theirs = frames[layout.duplicate_frame_mask(frames)]
        total += max(len(ours), len(theirs)) * layout.TOKENS_PER_FRAME
        if ours.shape == theirs.shape:
            same += int((ours == theirs).sum())
    return same / total if total else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10, help="audio in the default corpus")
    parser.add_argument(
        "--clip-seconds", type=float, default=0.0, help="join the default corpus' clips into clips at least this long"
    )
    parser.add_argument("--corpus", type=Path, help="an audiofolder (metadata.csv with file_name,text,speaker)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="orpheus_compile: true for (c)")
    parser.add_argument(
        "--workers", type=int, default=1, help="encoding processes on --device for (c) (orpheus_encode_devices)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run (a), (b) and (c) this many times in turn; report medians"
    )
    parser.add_argument(
        "--cluster",
        choices=["local", "ray"],
        default="local",
        help="ray: also run (c) with orpheus_encode_cluster: ray, and report Ray's overhead",
    )
    parser.add_argument("--snac-model", help="default: the stand-in SNAC 24 kHz (random weights)")
    parser.add_argument("--tokenizer", help="default: the stand-in Orpheus tokenizer")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed after)")
    parser.add_argument("--run-preprocess", type=Path, help=argparse.SUPPRESS)  # the child process of (c)
    args = parser.parse_args()
    if args.run_preprocess:
        print(json.dumps(run_preprocess(args.run_preprocess)))
        return

    from transformers import AutoTokenizer

    from axolotl_orpheus.cli.standins import build_standins

    standins = build_standins(STANDINS_CACHE / "standins")
    snac_model = args.snac_model or str(standins["snac"])
    tokenizer_name = args.tokenizer or str(standins["tokenizer"])
    work = args.work or Path(tempfile.mkdtemp(prefix="orpheus-bench-"))
    try:
        corpus = args.corpus or make_corpus(work / "corpus", args.minutes, args.clip_seconds)
        rows = read_corpus(corpus)
        clips = [load_clip(row["file_name"], str(corpus)) for row in rows]
        audio_seconds = sum(len(clip) for clip in clips) / SAMPLE_RATE
        print(f"corpus: {len(rows)} clips, {audio_seconds / 60:.1f} minutes; device {args.device}", flush=True)

        model = codec.load_stock_snac(snac_model, args.device)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)
        project = partial(
            project_preprocess,
            tokenizer=tokenizer_name,
            snac_model=snac_model,
            base_model=standins["model"],
            device=args.device,
            orpheus_compile=args.compile,
            orpheus_encode_devices=[args.device] * args.workers if args.workers > 1 else None,
        )
        rounds, first = [], None
        for number in range(args.rounds):
            a_seconds, eager_codes = eager_encode(model, clips, args.device)
            print(f"(a) eager SNAC encode:   {audio_seconds / a_seconds:6.2f} audio-s/s", flush=True)
            b_seconds = reference_recipe(model, tokenizer, corpus, rows, args.device)
            print(f"(b) reference recipe:    {audio_seconds / b_seconds:6.2f} audio-s/s", flush=True)
            cold, prepared = project(work / f"cold-{number}", corpus, codes_cache=work / f"codes-{number}")
            c_seconds = cold["strategy_s"]
            print(
                f"(c) the strategy:        {audio_seconds / c_seconds:6.2f} audio-s/s (encoding pass "
                f"{cold['encode_s']} s of {c_seconds} s); all of axolotl preprocess "
                f"{audio_seconds / cold['preprocess_s']:.2f} after {cold['start_up_s']} s of start-up "
                f"(peak RSS {cold['peak_rss_mb']:.0f} MB); c/b {b_seconds / c_seconds:.3f}",
                flush=True,
            )
            identical = identical_fraction(prepared, eager_codes)
            print(f"    audio tokens identical to (a): {identical:.6f}", flush=True)
            first = first or (cold, prepared)
            rounds.append(
                {
                    "a_s": round(a_seconds, 2),
                    "b_s": round(b_seconds, 2),
                    "c_s": c_seconds,
                    "preprocess_s": cold["preprocess_s"],
                    "wall_s": cold["wall_s"],
                    "vs_limit": round(a_seconds / c_seconds, 3),
                    "vs_reference": round(b_seconds / c_seconds, 3),
                    "codes_identical": round(identical, 6),
                }
            )
        del model
        median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        a_seconds, b_seconds, c_seconds = median["a_s"], median["b_s"], median["c_s"]
        codes_identical = min(r["codes_identical"] for r in rounds)
        cold, prepared = first
        if args.rounds > 1:
            print(
                f"medians of {args.rounds} rounds: (a) {audio_seconds / a_seconds:.2f}, "
                f"(b) {audio_seconds / b_seconds:.2f}, "
                f"(c) {audio_seconds / c_seconds:.2f} audio-s/s; c/a {median['vs_limit']:.3f}, "
                f"c/b {median['vs_reference']:.3f}",
                flush=True,
            )
        # A label option changed: same audio, so every code comes from the cache.
        warm, warm_prepared = project(work / "warm", corpus, codes_cache=work / "codes-0", orpheus_train_on_text=False)
        if rows_of(warm_prepared) != rows_of(prepared):
            raise SystemExit(f"the re-run prepared {rows_of(warm_prepared)} rows, the cold run {rows_of(prepared)}")
        print(
            f"    re-run after a label option change: strategy {warm['strategy_s']} s "
            f"({c_seconds / warm['strategy_s']:.1f}x faster than cold), axolotl preprocess {warm['preprocess_s']} s "
            f"({median['preprocess_s'] / warm['preprocess_s']:.1f}x)",
            flush=True,
        )
        # A tenth of the corpus, cold: peak RSS must not grow with the data.
        small_minutes = audio_seconds / 600
        small_corpus = None if args.corpus else make_corpus(work / "small-corpus", small_minutes, args.clip_seconds)
        small, small_prepared = (
            project(work / "small", small_corpus, codes_cache=work / "small-codes") if small_corpus else (None, None)
        )
        on_ray = None
        if args.cluster == "ray":
            corpora = [(corpus, cold, prepared)] + ([(small_corpus, small, small_prepared)] if small_corpus else [])
            on_ray = ray_overhead(project, work, corpora)
        figures = {
            "audio_seconds": round(audio_seconds, 2),
            "clips": len(rows),
            "clip_seconds": args.clip_seconds,
            "device": args.device,
            "orpheus_compile": args.compile,
            "encoding_processes": args.workers,
            "eager_audio_s_per_s": round(audio_seconds / a_seconds, 3),
            "reference_audio_s_per_s": round(audio_seconds / b_seconds, 3),
            "project_audio_s_per_s": round(audio_seconds / c_seconds, 3),
            "vs_limit": median["vs_limit"],
            "vs_reference": median["vs_reference"],
            "rounds": rounds,
            "codes_identical": codes_identical,
            "project_cold": cold,
            "preprocess_vs_reference": round(b_seconds / median["preprocess_s"], 3),
            "cli_vs_reference": round(b_seconds / median["wall_s"], 3),
            "rerun_after_option_change": warm,
            "rerun_speedup": round(c_seconds / warm["strategy_s"], 2),
            "rerun_speedup_preprocess": round(median["preprocess_s"] / warm["preprocess_s"], 2),
            "rerun_speedup_cli": round(median["wall_s"] / warm["wall_s"], 2),
            "tenth_of_the_corpus": small,
            "ray": on_ray,
            "peak_rss_growth_for_10x_data": round(cold["peak_rss_mb"] / small["peak_rss_mb"], 3) if small else None,
            "peak_rss_mb_benchmark": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads",
        }
        print(json.dumps(figures))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
