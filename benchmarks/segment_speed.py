"""Segmentation speed: audio-seconds per second of `axolotl-orpheus segment` on a long recording of speech.

    python benchmarks/segment_speed.py [--minutes 5] [--asr-model ID_OR_FOLDER] [--threads N]

Joins the bundled clips, over and over, into one recording of --minutes at 48 kHz in stereo with 0.6-1.2 s of
quiet noise between utterances (the tests' recordings, longer), then times:
  speech: the first pass, finding the speech with Silero VAD and planning the cuts;
  cut: the second pass, cutting the clips from the original and writing them;
  transcribe, align: the whole command without and with --transcript (the recording's known text), the ASR
      model's loading included.
The ASR defaults to the offline stand-in Whisper (tiny, random weights, at most 48 tokens a clip): its figures
show what the plumbing costs, not what a real Whisper does. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile
import torch

from axolotl_orpheus import audio
from axolotl_orpheus.cli.demo import BUNDLED_CLIPS, STANDINS_CACHE
from axolotl_orpheus.recordings import segment
from axolotl_orpheus.recordings import vad as speech_finding


class Utterance(NamedTuple):
    text: str
    start: float  # seconds in the recording, from its first audible sample
    end: float  # to its last


def bundled_speech() -> list[tuple[str, np.ndarray]]:
    """The bundled clips' texts and samples at 24 kHz, from their first audible sample to their last."""
    with open(Path(str(BUNDLED_CLIPS)) / "metadata.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    speech = []
    for row in rows:
        samples = audio.load_clip(str(Path(str(BUNDLED_CLIPS)) / row["file_name"]))
        audible = np.flatnonzero(np.abs(samples) > 1e-3)
        speech.append((row["text"], samples[audible[0] : audible[-1] + 1]))
    return speech


def join(
    path: Path,
    texts_and_clips: list[tuple[str, np.ndarray]],
    rate: int,
    channels: int,
    pauses: list[float],
    seed: int = 0,
) -> list[Utterance]:
    """Write the clips (24 kHz) at `rate` with `pauses` of quiet noise between them and 0.8 s before the first;
    the utterances' places."""
    rng = np.random.default_rng(seed)
    parts = [rng.normal(0, 0.003, int(0.8 * rate))]
    utterances, at = [], len(parts[0])
    for (text, clip), pause in zip(texts_and_clips, pauses):
        samples = audio.resample(clip, audio.SAMPLE_RATE, rate)
        utterances.append(Utterance(text, at / rate, (at + len(samples)) / rate))
        parts += [samples + rng.normal(0, 0.003, len(samples)), rng.normal(0, 0.003, int(pause * rate))]
        at += len(samples) + len(parts[-1])
    mono = np.concatenate(parts).astype(np.float32)
    data = mono if channels == 1 else np.stack([mono, 0.8 * mono + rng.normal(0, 0.001, len(mono))], axis=1)
    soundfile.write(path, data, rate, subtype="PCM_16")
    return utterances


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def machine() -> dict:
    """What a figure was measured on: the CPU, its cores, torch's build and threads, and the load before."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_before": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--asr-model", default=None, help="default: the offline stand-in Whisper")
    parser.add_argument("--threads", type=int, default=None, help="torch threads; default: torch's own")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.asr_model is None:
        from axolotl_orpheus.cli.standins import build_standins

        args.asr_model = str(build_standins(STANDINS_CACHE / "standins")["asr"])
    speech = bundled_speech()
    average = np.mean([len(clip) for _, clip in speech]) / audio.SAMPLE_RATE + 0.9
    utterances = [speech[index % len(speech)] for index in range(int(args.minutes * 60 / average))]
    figures: dict = {**machine(), "asr_model": args.asr_model}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        recording = folder / "recording.wav"
        pauses = np.random.default_rng(1).uniform(0.6, 1.2, len(utterances)).tolist()
        placed = join(recording, utterances, 48000, 2, pauses)
        (folder / "recording.txt").write_text(" ".join(u.text for u in placed), encoding="utf-8")
        seconds = soundfile.info(recording).duration
        figures.update(audio_seconds=round(seconds, 1), utterances=len(placed))

        vad = speech_finding.load_vad()
        started = time.perf_counter()
        rate, _, spans = speech_finding.find_clips(recording, vad, 1.0, 20.0)
        figures["speech_s"] = time.perf_counter() - started
        started = time.perf_counter()
        samples_spans = [(round(span.start * rate), round(span.end * rate)) for span in spans]
        for index, samples in enumerate(segment.clip_samples(recording, samples_spans)):
            audio.write_wav(folder / "cut" / f"{index:05d}.wav", samples, rate)
        figures["cut_s"] = time.perf_counter() - started
        figures["clips"] = len(spans)

        for mode, transcript in (("transcribe", None), ("align", str(folder / "recording.txt"))):
            started = time.perf_counter()
            segment.segment_recordings(
                [str(recording)],
                str(folder / mode),
                transcript=transcript,
                asr_model=args.asr_model,
                language="en",
                max_cer=1000,
            )
            figures[f"{mode}_s"] = time.perf_counter() - started
    for phase in ("speech", "cut", "transcribe", "align"):
        figures[f"{phase}_audio_seconds_per_second"] = round(seconds / figures[f"{phase}_s"], 1)
        figures[f"{phase}_s"] = round(figures[f"{phase}_s"], 2)
    figures["speech_and_cut_audio_seconds_per_second"] = round(seconds / (figures["speech_s"] + figures["cut_s"]), 1)
    figures["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
