"""Preprocessing speed and memory: this project against eager SNAC and the reference recipe, in one run.

    python benchmarks/preprocess.py [--minutes 10] [--corpus AUDIOFOLDER] [--device cpu|cuda]

Measures, on the same corpus (default: distinct variants of the bundled clips, each at another gain so no
cache can collapse them, --minutes of audio in all):
  (a) eager SNAC encode of every clip, one at a time (encode calls only: the limit),
  (b) a straightforward per-row re-implementation of the reference recipe (tests/reference_recipe.py),
  (c) `axolotl preprocess` with `type: axolotl_orpheus.tts`, end to end (start-up included);
audio-seconds per second for each, c/a and c/b, peak RSS, and the fraction of audio tokens identical
between (c) and (a). The last line printed is one JSON object with those figures.

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
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import soundfile
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the reference recipe oracle lives with the tests

from reference_recipe import reference_row  # noqa: E402

from axolotl_orpheus import codec, layout  # noqa: E402
from axolotl_orpheus.audio import SAMPLE_RATE, load_clip  # noqa: E402
from axolotl_orpheus.cli import BUNDLED_CLIPS, STANDINS_CACHE, demo_config, newest_prepared_dataset  # noqa: E402


def make_corpus(folder: Path, minutes: float) -> Path:
    """The bundled clips over and over, each copy at its own gain, until `minutes` of audio."""
    with open(Path(str(BUNDLED_CLIPS)) / "metadata.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    clips = [soundfile.read(Path(str(BUNDLED_CLIPS)) / r["file_name"], dtype="float32") for r in rows]
    folder.mkdir(parents=True)
    lines, seconds, copy = [], 0.0, 0
    while seconds < minutes * 60:
        for row, (samples, rate) in zip(rows, clips):
            gain = 0.3 + 0.7 * ((copy * 7919) % 1000) / 1000  # distinct per copy
            name = f"{copy:05d}-{row['file_name']}"
            soundfile.write(folder / name, samples * gain, rate, subtype="FLOAT")
            lines.append([name, row["text"], row["speaker"]])
            seconds += len(samples) / rate
        copy += 1
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["file_name", "text", "speaker"], *lines])
    return folder


def read_corpus(folder: Path) -> list[dict]:
    with open(folder / "metadata.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def stock_snac(name_or_path: str, device: str):
    """SNAC as its own package builds it (stock Snake), weights loaded safely."""
    from snac import SNAC

    config_file, weights_file = codec.snac_files(name_or_path)
    model = SNAC(**json.loads(config_file.read_text()))
    model.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
    return model.eval().to(device)


def eager_encode(model, clips: list[np.ndarray], device: str) -> tuple[float, list]:
    """(a): one clip at a time, timing only the encode calls."""
    codes, spent = [], 0.0
    with torch.inference_mode():
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
        reference_row(model, tokenizer, load_clip(row["file_name"], str(folder)), row["text"], row["speaker"], device=device)
    return time.perf_counter() - start


def project_preprocess(out: Path, corpus: Path, tokenizer: str, snac_model: str, base_model: Path, device: str) -> tuple[float, Path, float]:
    """(c): `axolotl preprocess` end to end; returns (seconds, prepared folder, peak RSS MB of the run)."""
    config = demo_config(out, tokenizer, snac_model, base_model)
    config.update(
        datasets=[{"path": str(corpus), "type": "axolotl_orpheus.tts"}],
        sequence_len=8192,
        shuffle_merged_datasets=False,
        orpheus_device=device,
    )
    path = out / "bench.yml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "AXOLOTL_DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    start = time.perf_counter()
    process = psutil.Popen(
        [sys.executable, "-m", "axolotl.cli.main", "preprocess", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    # Poll the RSS of the run and its children: ru_maxrss of a child would include this process's RSS at fork.
    peak = 0
    output = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.1)
    spent = time.perf_counter() - start
    reader.join()
    if process.returncode:
        raise SystemExit("axolotl preprocess failed:\n" + "".join(output)[-5000:])
    peak_mb = peak / 2**20
    return spent, newest_prepared_dataset(out / "prepared"), peak_mb


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
    parser.add_argument("--corpus", type=Path, help="an audiofolder (metadata.csv with file_name,text,speaker)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--snac-model", help="default: the stand-in SNAC 24 kHz (random weights)")
    parser.add_argument("--tokenizer", help="default: the stand-in Orpheus tokenizer")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed after)")
    args = parser.parse_args()

    from axolotl_orpheus.standins import build_standins
    from transformers import AutoTokenizer

    standins = build_standins(STANDINS_CACHE / "standins")
    snac_model = args.snac_model or str(standins["snac"])
    tokenizer_name = args.tokenizer or str(standins["tokenizer"])
    work = args.work or Path(tempfile.mkdtemp(prefix="orpheus-bench-"))
    try:
        corpus = args.corpus or make_corpus(work / "corpus", args.minutes)
        rows = read_corpus(corpus)
        clips = [load_clip(row["file_name"], str(corpus)) for row in rows]
        audio_seconds = sum(len(clip) for clip in clips) / SAMPLE_RATE
        print(f"corpus: {len(rows)} clips, {audio_seconds / 60:.1f} minutes; device {args.device}", flush=True)

        model = stock_snac(snac_model, args.device)
        a_seconds, eager_codes = eager_encode(model, clips, args.device)
        print(f"(a) eager SNAC encode:   {audio_seconds / a_seconds:6.2f} audio-s/s", flush=True)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)
        b_seconds = reference_recipe(model, tokenizer, corpus, rows, args.device)
        print(f"(b) reference recipe:    {audio_seconds / b_seconds:6.2f} audio-s/s", flush=True)
        del model
        c_seconds, prepared, c_peak_mb = project_preprocess(
            work / "project", corpus, tokenizer_name, snac_model, standins["model"], args.device
        )
        print(f"(c) axolotl preprocess:  {audio_seconds / c_seconds:6.2f} audio-s/s (peak RSS {c_peak_mb:.0f} MB)")
        figures = {
            "audio_seconds": round(audio_seconds, 2),
            "clips": len(rows),
            "device": args.device,
            "eager_audio_s_per_s": round(audio_seconds / a_seconds, 3),
            "reference_audio_s_per_s": round(audio_seconds / b_seconds, 3),
            "project_audio_s_per_s": round(audio_seconds / c_seconds, 3),
            "vs_limit": round(a_seconds / c_seconds, 3),
            "vs_reference": round(b_seconds / c_seconds, 3),
            "codes_identical": round(identical_fraction(prepared, eager_codes), 6),
            "peak_rss_mb_benchmark": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_mb_project": round(c_peak_mb, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, {torch.get_num_threads()} threads",
        }
        print(json.dumps(figures))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
