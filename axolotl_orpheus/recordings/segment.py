"""`axolotl-orpheus segment`: long recordings to an audiofolder of clips with transcripts, which `init` and
`axolotl preprocess` read as they are.

Each recording is read twice from its start, a block at a time, so that memory never holds it whole: once to
find the speech (Silero VAD on a 16 kHz copy, keeping only each 32 ms window's speech probability and energy),
once to cut the clips from the original samples. cuts.py decides where to cut and, given the recording's known
text, which of its words each clip holds; asr.py hears the clips.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from tqdm import tqdm

from axolotl_orpheus import audio
from axolotl_orpheus.args import DEFAULT_ASR_MODEL, DEFAULT_MAX_CER
from axolotl_orpheus.errors import UserError
from axolotl_orpheus.listen import scoring
from axolotl_orpheus.listen.asr import ASR, BATCH_SIZE, Transcript, word_timing_problem
from axolotl_orpheus.listen.quality import OVRL_COLUMN, QualityJudge
from axolotl_orpheus.recordings import cuts
from axolotl_orpheus.recordings.vad import find_clips, load_vad

LOG = logging.getLogger(__name__)

REPORT_FILE = "segment_report.json"
METADATA_COLUMNS = ("file_name", "text", "speaker", "source", "start", "end")
# Why recorded seconds were left out, as the report counts them.
DROP_REASONS = ("no_speech", "too_short", "no_words", "transcript_mismatch", "low_quality")


def clip_samples(path: Path, spans: list[tuple[int, int]]) -> Iterator[np.ndarray]:
    """The mono samples of each span (sorted, disjoint sample indices at the file's rate), from one pass over
    the file: memory holds a block and the clip being gathered."""
    spans_left = iter(spans)
    span = next(spans_left, None)
    gathered: list[np.ndarray] = []
    offset = 0
    for block in audio.mono_blocks(str(path)):
        while span is not None and span[0] < offset + len(block):
            gathered.append(block[max(span[0] - offset, 0) : span[1] - offset])
            if span[1] > offset + len(block):
                break  # the clip goes on in the next block
            yield np.concatenate(gathered)
            gathered, span = [], next(spans_left, None)
        if span is None:
            return
        offset += len(block)
    raise audio.AudioError(
        f"the file ended {offset} frames in, before its last clip: it changed while being read", "unreadable_file"
    )


def recordings_in(paths: list[str], out: Path) -> list[Path]:
    """The files named, and the audio files inside the folders named (by extension, soundfile's formats),
    leaving out those in the output folder itself, where clips go (an earlier run's)."""
    formats = {f".{name.lower()}" for name in soundfile.available_formats()}
    found = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            if path.resolve() == out.resolve():
                raise UserError(
                    f"--out {out} is the folder of recordings {name}: the clips would land among them. To fix: give "
                    "--out a folder of its own"
                )
            found += [
                file
                for file in sorted(path.rglob("*"))
                if file.is_file() and file.suffix.lower() in formats and file.resolve().parent != out.resolve()
            ]
        elif path.exists():
            found.append(path)
        else:
            raise UserError(f"no recording {name}: no such file or folder. To fix: check the path")
    if not found:
        raise UserError(f"no audio files in {', '.join(paths)} (extensions {', '.join(sorted(formats))})")
    return found


def read_transcripts(transcript: str | None, recordings: list[Path]) -> dict[Path, list[str]]:
    """Each recording's known words: --transcript FILE for one recording, or a folder of RECORDING_NAME.txt."""
    if transcript is None:
        return {}
    given = Path(transcript)
    if given.is_dir():
        files = {recording: given / f"{recording.stem}.txt" for recording in recordings}
    elif len(recordings) == 1:
        files = {recordings[0]: given}
    else:
        raise UserError(
            f"--transcript {transcript} is one text, for {len(recordings)} recordings. To fix: give a folder "
            "holding RECORDING_NAME.txt for each recording, or segment one recording at a time"
        )
    missing = [str(file) for file in files.values() if not file.is_file()]
    if missing:
        raise UserError(f"no transcript {', '.join(missing)}. To fix: write the recording's text there")
    words = {recording: file.read_text(encoding="utf-8").split() for recording, file in files.items()}
    empty = [str(files[recording]) for recording, text in words.items() if not text]
    if empty:
        raise UserError(f"transcript {', '.join(empty)} holds no words. To fix: write the recording's text there")
    return words


@dataclass
class Clip:
    """A planned clip of a recording, and what became of it."""

    span: cuts.Span
    name: str  # the wav it is (or would be) written to
    samples_span: tuple[int, int]
    heard: Transcript | None = None
    text: str = ""  # the row's transcript: the known text's words, or what the ASR heard
    cer: float | None = None  # of the heard text against the known text
    reason: str | None = None  # why it was dropped (DROP_REASONS), or None: kept
    dnsmos: float | None = None  # its DNSMOS OVRL, with --min-dnsmos
    above_full_scale: bool = False  # written as a float wav: 16 bits would clip its samples

    @property
    def seconds(self) -> float:
        return self.span.end - self.span.start


@dataclass
class Segmenter:
    """One run of `segment`: the settings, the models (the ASR loaded when first needed), the rows and report."""

    out: Path
    speaker: str
    min_seconds: float
    max_seconds: float
    max_cer: float
    on_bad: str
    load_asr: Callable[[], Any]  # an ASR, or anything with its transcribe, transcribe_words and english_spelling
    vad: torch.jit.ScriptModule = field(default_factory=load_vad)
    rows: list[dict[str, Any]] = field(default_factory=list)
    recordings: list[dict[str, Any]] = field(default_factory=list)
    dropped_clips: list[dict[str, Any]] = field(default_factory=list)
    bad_recordings: list[dict[str, str]] = field(default_factory=list)
    stems: set[str] = field(default_factory=set)  # of the clips' names: one per recording
    min_dnsmos: float | None = None  # drop kept clips whose DNSMOS OVRL is under it; None: not scored
    judge: Any = None  # a listen.quality.QualityJudge, with min_dnsmos
    _asr: Any = None

    @property
    def asr(self) -> Any:
        if self._asr is None:
            try:
                self._asr = self.load_asr()
            except RuntimeError as error:  # ASR's own, saying how to fix it
                raise UserError(str(error)) from error
        return self._asr

    def segment(self, path: Path, known_words: list[str] | None) -> None:
        """Cut, hear and write one recording; a recording that cannot be read is reported, or stops the run."""
        written: list[Path] = []
        try:
            rate, frames, spans = find_clips(path, self.vad, self.min_seconds, self.max_seconds)
            clips = self._clips(path, rate, frames, spans)
            if known_words is None:
                self._transcribe(path, rate, clips, written)
            else:
                self._align(path, rate, clips, known_words, written)
        except audio.AudioError as error:
            for file in written:
                file.unlink()
            if self.on_bad == "raise":
                raise UserError(
                    f"cannot segment {path}: {str(error).rstrip('.')}. To fix: convert or replace the file, or leave "
                    "out --on-bad raise to report such recordings in segment_report.json and go on"
                ) from error
            LOG.warning(f"skipped {path}: {error}")
            self.bad_recordings.append({"source": str(path), "reason": error.reason, "error": str(error)})
            return
        if self.min_dnsmos is not None:
            self._rate(path, clips)
        self._account(path, frames / rate, clips, known_words)

    def _rate(self, path: Path, clips: list[Clip]) -> None:
        """Each kept clip's DNSMOS OVRL, of its wav as preprocessing will read it; one under --min-dnsmos is
        dropped."""
        kept = [clip for clip in clips if clip.reason is None]
        if not kept:
            return
        samples = [audio.load_clip(str(self.out / clip.name)) for clip in kept]
        for clip, scores in zip(kept, self.judge.score(samples, audio.SAMPLE_RATE, f"DNSMOS {path.name}")):
            clip.dnsmos = round(scores.ovrl, 3)
            if scores.ovrl < self.min_dnsmos:
                clip.reason = "low_quality"
                (self.out / clip.name).unlink()

    def _stem(self, path: Path) -> str:
        """The recording's name for its clips (STEM_0001.wav...): its own, or with the first -N that no other
        recording's has. A clip's name then names one clip whatever the recordings are called (its stem is what
        comes before its last _)."""
        stem, number = path.stem, 1
        while stem in self.stems:
            number += 1
            stem = f"{path.stem}-{number}"
        self.stems.add(stem)
        return stem

    def _clips(self, path: Path, rate: int, frames: int, spans: list[cuts.Span]) -> list[Clip]:
        stem = self._stem(path)
        return [
            Clip(
                span,
                f"{stem}_{number:04d}.wav",
                (round(span.start * rate), min(round(span.end * rate), frames)),
                reason="too_short" if span.too_short else None,
            )
            for number, span in enumerate(spans, start=1)
        ]

    def _heard(self, path: Path, clips: list[Clip]) -> Iterator[tuple[Clip, np.ndarray]]:
        """Each clip with its samples, under a progress bar."""
        samples = clip_samples(path, [clip.samples_span for clip in clips])
        yield from tqdm(
            zip(clips, samples), total=len(clips), desc=f"Transcribing {path.name}", unit="clip", leave=False
        )

    def _write(self, clip: Clip, samples: np.ndarray, rate: int, written: list[Path]) -> None:
        """The clip's wav: 16-bit, or 32-bit float where its samples peak above full scale (a float recording's
        can), which 16 bits would clip."""
        clip.above_full_scale = bool(np.abs(samples).max(initial=0.0) > 1.0)
        audio.write_wav(self.out / clip.name, samples, rate, "FLOAT" if clip.above_full_scale else "PCM_16")
        written.append(self.out / clip.name)

    def _transcribe(self, path: Path, rate: int, clips: list[Clip], written: list[Path]) -> None:
        """The clips long enough, heard a batch at a time: each one's text is what the ASR heard (none: dropped)."""
        heard = self._heard(path, [clip for clip in clips if clip.reason is None])
        while batch := list(islice(heard, BATCH_SIZE)):
            for (clip, samples), transcript in zip(batch, self.asr.transcribe([samples for _, samples in batch], rate)):
                clip.heard, clip.text = transcript, transcript.text
                if transcript.text:
                    self._write(clip, samples, rate, written)
                else:
                    clip.reason = "no_words"

    def _align(self, path: Path, rate: int, clips: list[Clip], known_words: list[str], written: list[Path]) -> None:
        """Every clip heard with its words' times (the too short ones too, so that their words go with them), the
        known words split among the clips by those words; a clip whose heard text is too far from its own known
        text is dropped."""
        heard_words: list[cuts.HeardWord] = []
        for index, (clip, samples) in enumerate(self._heard(path, clips)):
            clip.heard = self.asr.transcribe_words(samples, rate)
            heard_words += [
                cuts.HeardWord(word.text, index, word.start or 0.0, clip.seconds if word.end is None else word.end)
                for word in clip.heard.words
            ]
            if clip.reason is None:
                self._write(clip, samples, rate, written)
        if not clips:
            return
        spelling = self.asr.english_spelling
        speech = [(clip.span.lead, clip.seconds - clip.span.tail) for clip in clips]
        for clip, words in zip(clips, cuts.words_per_clip(known_words, heard_words, speech)):
            clip.text = " ".join(words)
            if clip.reason is not None:
                continue
            if not words:
                clip.reason = "no_words"
            else:
                language = clip.heard.language
                clip.cer = scoring.character_error_rate(
                    scoring.normalise(clip.text, language, spelling),
                    scoring.normalise(clip.heard.text, language, spelling),
                )
                if clip.cer > self.max_cer:
                    clip.reason = "transcript_mismatch"
            if clip.reason is not None:
                (self.out / clip.name).unlink()
                written.remove(self.out / clip.name)

    def _account(self, path: Path, seconds: float, clips: list[Clip], known_words: list[str] | None) -> None:
        """The recording's rows, its dropped clips and its line in the report."""
        dropped: Counter = Counter({"no_speech": seconds - sum(clip.seconds for clip in clips)})
        for clip in clips:
            start, end = round(clip.span.start, 3), round(clip.span.end, 3)
            if clip.reason is None:
                self.rows.append(
                    {
                        "file_name": clip.name,
                        "text": clip.text,
                        "speaker": self.speaker,
                        "source": str(path),
                        "start": start,
                        "end": end,
                        **({OVRL_COLUMN: clip.dnsmos} if clip.dnsmos is not None else {}),
                    }
                )
                continue
            dropped[clip.reason] += clip.seconds
            entry = {"source": str(path), "start": start, "end": end, "reason": clip.reason}
            if clip.heard is not None:
                entry.update(text=clip.text, heard=clip.heard.text)
            if clip.cer is not None:
                entry["cer"] = round(clip.cer, 3)
            if clip.dnsmos is not None:
                entry[OVRL_COLUMN] = clip.dnsmos
            self.dropped_clips.append(entry)
        kept = [clip for clip in clips if clip.reason is None]
        loud = sum(clip.above_full_scale for clip in kept)
        if loud:
            LOG.warning(f"{path}: {loud} clips peak above full scale: written as 32-bit float wavs, samples kept")
        line = {
            "source": str(path),
            "seconds": round(seconds, 3),
            "clips": len(kept),
            "kept_seconds": round(sum(clip.seconds for clip in kept), 3),
            "dropped_seconds": {reason: round(dropped[reason], 3) for reason in DROP_REASONS if dropped[reason]},
            "clips_above_full_scale": loud,
        }
        if known_words is not None:
            line.update(transcript_words=len(known_words), kept_words=sum(len(clip.text.split()) for clip in kept))
        self.recordings.append(line)

    def finish(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Write segment_report.json, and metadata.csv where a clip was kept (a dataset of no rows is no dataset);
        the report."""
        columns = METADATA_COLUMNS + ((OVRL_COLUMN,) if self.min_dnsmos is not None else ())
        if self.rows:
            with open(self.out / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, columns)
                writer.writeheader()
                writer.writerows(self.rows)
        hours = Counter()
        for line in self.recordings:
            hours.update(line["dropped_seconds"])
        report = {
            "recordings": len(self.recordings) + len(self.bad_recordings),
            "clips": len(self.rows),
            "clips_above_full_scale": sum(line["clips_above_full_scale"] for line in self.recordings),
            "hours": {
                "recorded": round(sum(line["seconds"] for line in self.recordings) / 3600, 4),
                "kept": round(sum(line["kept_seconds"] for line in self.recordings) / 3600, 4),
                "dropped": {reason: round(hours[reason] / 3600, 4) for reason in DROP_REASONS if hours[reason]},
            },
            "settings": settings,
            "per_recording": self.recordings,
            "bad_recordings": self.bad_recordings,
            "dropped_clips": self.dropped_clips,
        }
        (self.out / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        return report


def segment_recordings(
    recordings: list[str],
    out: str,
    speaker: str | None = None,
    transcript: str | None = None,
    asr_model: str = DEFAULT_ASR_MODEL,
    language: str | None = None,
    min_seconds: float = 1.0,
    max_seconds: float = 20.0,
    max_cer: float = DEFAULT_MAX_CER,
    device: str | None = None,
    on_bad: str = "skip",
    load_asr: Callable[[], Any] | None = None,
    min_dnsmos: float | None = None,
    judge: Any = None,
) -> dict[str, Any]:
    """Segment recordings (files or folders of them) into the audiofolder `out`; the report it wrote.

    `load_asr` gives the model that hears the clips (default: `ASR(asr_model, device, language)`), loaded only
    once a recording has speech.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {out} is a file; segment writes a folder of clips. To fix: give --out a new folder")
    if (folder / "metadata.csv").exists():
        raise UserError(f"{folder} already holds a metadata.csv. To fix: give --out a new folder, or remove it")
    if not 0 <= min_seconds < max_seconds or max_seconds <= cuts.EDGES_SECONDS + cuts.WINDOW_SECONDS:
        raise UserError(
            f"--min-seconds {min_seconds:g} and --max-seconds {max_seconds:g}: need 0 <= min < max, "
            f"and max above {cuts.EDGES_SECONDS:g} s (the silence kept at both ends)"
        )
    if max_cer < 0:
        raise UserError(f"--max-cer {max_cer:g}: a character error rate is 0 or more")
    if min_dnsmos is not None and not 0 <= min_dnsmos <= 5:
        raise UserError(f"--min-dnsmos {min_dnsmos:g}: DNSMOS scores are 1 to 5 (0 scores every clip, drops none)")
    if min_dnsmos is not None and judge is None:
        judge = QualityJudge(device)  # before the speech pass, which can take long: a missing package says so now
    files = recordings_in(recordings, folder)
    known = read_transcripts(transcript, files)
    problem = transcript and load_asr is None and word_timing_problem(asr_model)
    if problem:  # before the speech pass, which can take long
        raise UserError(f"{problem}; or leave out --transcript")
    settings = {
        "min_seconds": min_seconds,
        "max_seconds": max_seconds,
        "asr_model": asr_model,
        "language": language,
        "transcript": transcript,
        "max_cer": max_cer if transcript else None,
        "min_dnsmos": min_dnsmos,
        "pause_seconds": cuts.PAUSE_SECONDS,
        "lead_seconds": cuts.LEAD_SECONDS,
        "tail_seconds": cuts.TAIL_SECONDS,
    }
    folder.mkdir(parents=True, exist_ok=True)
    segmenter = Segmenter(
        folder,
        speaker or folder.resolve().name,
        min_seconds,
        max_seconds,
        max_cer,
        on_bad,
        load_asr or partial(ASR, asr_model, device, language),
        min_dnsmos=min_dnsmos,
        judge=judge,
    )
    for path in tqdm(files, desc="Recordings", unit="recording"):
        segmenter.segment(path, known.get(path))
    report = segmenter.finish(settings)
    if not report["clips"]:
        raise UserError(nothing_kept(report, folder / REPORT_FILE))
    return report


# What to change when a reason dropped every clip.
NOTHING_KEPT_FIXES = {
    "too_short": "lower --min-seconds",
    "no_words": "check --asr-model and --language: the ASR heard no words",
    "transcript_mismatch": "check that --transcript is these recordings' text, or raise --max-cer",
    "low_quality": "lower --min-dnsmos, or listen to the recordings: noise, echo, music or distortion",
}


def nothing_kept(report: dict[str, Any], path: Path) -> str:
    """Why a run kept no clip, in one line: no recording could be read, no speech, or every clip dropped."""
    recordings = report["per_recording"]
    if not recordings:
        return f"none of the {report['recordings']} recordings could be read: {path} says why; no metadata.csv written"
    reasons = [reason for reason in DROP_REASONS[1:] if any(line["dropped_seconds"].get(reason) for line in recordings)]
    if not reasons:
        seconds = sum(line["seconds"] for line in recordings)
        return (
            f"no speech found in {len(recordings)} recording{'s' if len(recordings) > 1 else ''} ({seconds:.1f} s): "
            "no clips, no metadata.csv written. To fix: give recordings of someone speaking"
        )
    fixes = "; ".join(NOTHING_KEPT_FIXES[reason] for reason in reasons)
    return f"every clip was dropped ({', '.join(reasons)}: see {path}), no metadata.csv written. To fix: {fixes}"


def summary(report: dict[str, Any]) -> str:
    """The report in a few lines, for the terminal."""
    hours = report["hours"]
    dropped = ", ".join(f"{reason} {value:.2f} h" for reason, value in hours["dropped"].items()) or "nothing"
    lines = [
        f"{report['clips']} clips, {hours['kept']:.2f} h kept of {hours['recorded']:.2f} h in "
        f"{report['recordings']} recordings; dropped: {dropped}"
    ]
    if report["clips_above_full_scale"]:
        lines.append(
            f"{report['clips_above_full_scale']} clips peak above full scale: written as 32-bit float wavs, their "
            "samples kept (16 bits would clip them)"
        )
    lines += [f"skipped {bad['source']}: {bad['error']}" for bad in report["bad_recordings"]]
    return "\n".join(lines)
