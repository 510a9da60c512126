"""Scoring what a checkpoint speaks: each row's text spoken with its voice, then heard back and compared.

One pass, shared by training (the plugin's scorer, at each evaluation) and `axolotl-orpheus evaluate`: speak
the rows in batches with the frame-constrained sampler (row i from seed + i), decode with SNAC, transcribe
with Whisper, embed sample and reference with the speaker model, and write the wavs and metrics.json.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from axolotl_orpheus import codec, devices, layout
from axolotl_orpheus.args import DEFAULT_MAX_NEW_TOKENS
from axolotl_orpheus.audio import SAMPLE_RATE, write_wav
from axolotl_orpheus.errors import UserError
from axolotl_orpheus.listen import scoring, speak
from axolotl_orpheus.listen.asr import ASR
from axolotl_orpheus.listen.quality import QualityJudge, optional_judge
from axolotl_orpheus.listen.voice import check_model, load_model
from axolotl_orpheus.listen.voiceprint import SpeakerEncoder

LOG = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
BATCH_SIZE = 8
# Each score's name as trainer metrics carry it (after eval_) and whether a higher value is better; the
# duration ratio is best at 1, neither high nor low, so no checkpoint can be chosen by it.
METRICS: dict[str, bool | None] = {
    "orpheus_cer": False,
    "orpheus_wer": False,
    "orpheus_speaker_similarity": True,
    "orpheus_stop_rate": True,
    "orpheus_duration_ratio": None,
    "orpheus_loop_rate": False,
    "orpheus_dnsmos": True,
}


@dataclass
class EvalRow:
    """One thing to speak and what to compare it with."""

    text: str  # what the sample must say
    voice: str | None
    prompt_ids: list[int]  # the row's ids up to start_of_speech, as the model was trained to continue
    reference: np.ndarray | None  # 24 kHz audio of the voice: the row's own clip, decoded from its codes


def split_voice(prompt: str, voices: set[str]) -> tuple[str | None, str]:
    """(voice, text) of a prompt "{voice}: {text}", where voice is one the data has; else (None, prompt)."""
    voice, separator, text = prompt.partition(": ")
    return (voice, text) if separator and voice in voices else (None, prompt)


def prepared_rows(input_ids: list[list[int]], tokenizer, snac, voices: set[str]) -> list[EvalRow]:
    """Prepared training rows as evaluation rows: the prompt read back from the ids, the reference decoded.

    `voices`: the speaker names of the data (its report's), to tell "tara: Hello" from a text with a colon.
    """
    rows = []
    for ids in input_ids:
        ids = np.asarray(ids)
        start = int(np.flatnonzero(ids == layout.START_OF_SPEECH)[0])
        # START_OF_HUMAN, BOS, the prompt's text, then PROMPT_SUFFIX up to start_of_speech.
        text_ids = ids[len(layout.PROMPT_PREFIX) + 1 : start + 1 - len(layout.PROMPT_SUFFIX)]
        voice, text = split_voice(tokenizer.decode(text_ids.tolist()), voices)
        reference = codec.decode(snac, layout.deinterleave(layout.speech_frames(ids)))
        rows.append(EvalRow(text, voice, ids[: start + 1].tolist(), reference))
    return rows


def text_rows(texts: list[str], voice: str | None, tokenizer, references: list[np.ndarray]) -> list[EvalRow]:
    """Texts to speak in one voice; with as many reference clips as texts, each text has its own."""
    paired = len(references) == len(texts)
    return [
        EvalRow(text, voice, speak.speech_prompt_ids(tokenizer, text, voice), references[index] if paired else None)
        for index, text in enumerate(texts)
    ]


def _mean(values: list) -> float:
    present = [value for value in values if value is not None]
    return float(np.mean(present)) if present else float("nan")


class Evaluation:
    """The judges (SNAC to decode, Whisper to hear, a speaker model to compare voices, DNSMOS to rate the sound),
    loaded once. Without a quality judge (the [quality] extra not installed) orpheus_dnsmos is NaN."""

    def __init__(
        self,
        snac,
        asr: ASR,
        speakers: SpeakerEncoder,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        batch_size: int = BATCH_SIZE,
        seed: int = 0,
        references: list[np.ndarray] = (),
        quality: QualityJudge | None = None,
    ) -> None:
        self.snac = snac
        self.quality = quality
        self.asr = asr
        self.speakers = speakers
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.seed = seed
        # Clips of the voice that rows without their own reference are compared with (their mean embedding).
        self.voice_embedding = speakers.embed(list(references), SAMPLE_RATE).mean(axis=0) if len(references) else None

    def run(self, model, rows: list[EvalRow], out: Path) -> dict[str, Any]:
        """Speak and score `rows`; writes out/row-NN-voice.wav and out/metrics.json, returns what metrics.json holds."""
        began = time.perf_counter()
        spoken: list[speak.Spoken] = []
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            seeds = [self.seed + start + offset for offset in range(len(batch))]
            spoken += speak.generate_frames(
                model, [row.prompt_ids for row in batch], seeds, max_new_tokens=self.max_new_tokens
            )
        clips = [
            codec.decode(self.snac, layout.deinterleave(said.frames), seed=self.seed + index)
            for index, said in enumerate(spoken)
        ]
        transcripts = self.asr.transcribe(clips, SAMPLE_RATE)
        similarities = self._similarities(rows, clips)
        qualities = self.quality.score(clips, SAMPLE_RATE, progress=None) if self.quality else [None] * len(clips)
        samples = []
        out.mkdir(parents=True, exist_ok=True)
        for index, (row, said, clip, heard) in enumerate(zip(rows, spoken, clips, transcripts)):
            name = f"row-{index:02d}-{row.voice or 'text'}.wav"  # beside the prompts' samples, NN-voice.wav
            write_wav(out / name, clip)
            samples.append(self._sample(row, said, clip, heard, similarities[index], name))
            samples[-1]["dnsmos"] = None if qualities[index] is None else qualities[index]._asdict()
        report = {
            "mean": {
                "orpheus_cer": _mean([sample["cer"] for sample in samples]),
                "orpheus_wer": _mean([sample["wer"] for sample in samples]),
                "orpheus_speaker_similarity": _mean([sample["speaker_similarity"] for sample in samples]),
                "orpheus_stop_rate": _mean([sample["stopped"] for sample in samples]),
                "orpheus_duration_ratio": _mean([sample["duration_ratio"] for sample in samples]),
                "orpheus_loop_rate": _mean([sample["loops"] for sample in samples]),
                "orpheus_dnsmos": _mean([(sample["dnsmos"] or {}).get("ovrl") for sample in samples]),
            },
            "seconds": round(time.perf_counter() - began, 2),
            "seed": self.seed,
            "asr_model": self.asr.name,
            "speaker_model": self.speakers.name,
            "samples": samples,
        }
        (out / METRICS_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        return report

    def _similarities(self, rows: list[EvalRow], clips: list[np.ndarray]) -> list[float | None]:
        """Each sample's cosine similarity to its row's reference, else to the voice's; None without either."""
        embedded = self.speakers.embed(clips, SAMPLE_RATE)
        own = [index for index, row in enumerate(rows) if row.reference is not None]
        references = dict(zip(own, self.speakers.embed([rows[i].reference for i in own], SAMPLE_RATE))) if own else {}
        similarities: list[float | None] = []
        for index, sample in enumerate(embedded):
            reference = references.get(index, self.voice_embedding)
            similarities.append(None if reference is None else scoring.cosine_similarity(sample, reference))
        return similarities

    def _sample(self, row: EvalRow, said: speak.Spoken, clip: np.ndarray, heard, similarity, name: str) -> dict:
        language = heard.language
        text = scoring.normalise(row.text, language, self.asr.english_spelling)
        transcript = scoring.normalise(heard.text, language, self.asr.english_spelling)
        seconds = len(clip) / SAMPLE_RATE
        reference_seconds = None if row.reference is None else len(row.reference) / SAMPLE_RATE
        return {
            "wav": name,
            "voice": row.voice,
            "text": row.text,
            "transcript": heard.text,
            "language": language,
            "cer": scoring.character_error_rate(text, transcript),
            "wer": scoring.word_error_rate(text, transcript),
            "speaker_similarity": similarity,
            "stopped": said.stopped,
            "seconds": round(seconds, 3),
            "reference_seconds": None if reference_seconds is None else round(reference_seconds, 3),
            "duration_ratio": seconds / reference_seconds if reference_seconds else None,
            "loops": scoring.loops(text, transcript),
        }


def model_labels(models: list[str]) -> list[str]:
    """Short distinct names for models given as paths: their last folder, with its parent where two share it."""
    names = [Path(model).name or model for model in models]
    labels = [
        name if names.count(name) == 1 else "-".join(Path(model).parts[-2:]) for name, model in zip(names, models)
    ]
    return [label if labels.count(label) == 1 else f"{index}-{label}" for index, label in enumerate(labels)]


def read_texts(path: Path) -> list[str]:
    """The sentences of a --texts file, one a line, blank lines left out; a UserError where there are none."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"--texts {path}: no such file. To fix: give a text file, one sentence a line") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"--texts {path}: cannot read it ({error}). To fix: give a UTF-8 text file") from None
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise UserError(f"{path} holds no text; write one sentence per line")
    return texts


def reference_clip(path: Path) -> np.ndarray:
    """A --reference clip at 24 kHz, or a UserError naming it."""
    from axolotl_orpheus.audio import AudioError, load_checked_clip

    try:
        return load_checked_clip(str(path)).samples
    except AudioError as error:
        raise UserError(
            f"--reference {path}: {str(error).rstrip('.')}. To fix: give wav or flac clips of the voice"
        ) from None


def evaluate_checkpoints(
    models: list[str],
    out: Path,
    *,
    prepared: Path | None = None,
    rows: int = BATCH_SIZE,
    texts: list[str] | None = None,
    voice: str | None = None,
    references: list[Path] = (),
    asr_model: str,
    speaker_model: str,
    snac_model: str,
    language: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    seed: int = 0,
    device: str | None = None,
) -> dict[str, dict]:
    """Score each model on the same rows with the same seed: OUT/<label>/ holds its wavs and metrics.json, and
    OUT/metrics.json all of them. Rows are a prepared dataset's first `rows`, or `texts` in `voice`."""
    from datasets import load_from_disk

    from axolotl_orpheus.prepare.report import report_voices

    if prepared is not None and not (prepared / "dataset_info.json").is_file():
        raise UserError(
            f"{prepared} is not a prepared dataset; give dataset_prepared_path/<hash>, the "
            "folder `axolotl preprocess` wrote"
        )
    dataset = None
    if prepared is not None:
        if rows < 1:
            raise UserError(f"--rows {rows}: give how many of the prepared rows to speak, 1 or more")
        dataset = load_from_disk(str(prepared))
        if rows > len(dataset):
            LOG.warning(f"--rows {rows}: {prepared} holds {len(dataset)} rows; speaking those {len(dataset)}")
        dataset = dataset.select(range(min(rows, len(dataset))))
    # Every user's mistake before any work: a typo in the last --model must not cost the first one's scoring.
    reference_clips = [reference_clip(path) for path in references]
    for model_path in models:
        check_model(model_path)
    device = devices.pick_device(device)
    snac = codec.load_snac(snac_model, device)
    asr = ASR(asr_model, device, language)
    speakers = SpeakerEncoder(speaker_model, device)
    quality = optional_judge(device)
    evaluation = Evaluation(snac, asr, speakers, max_new_tokens, seed=seed, references=reference_clips, quality=quality)
    reports: dict[str, dict] = {}
    eval_rows = None
    for model_path, label in zip(models, model_labels(models)):
        model, tokenizer = load_model(model_path, str(device))
        if eval_rows is None:  # the same rows for every model: the layout is Orpheus', whoever trained it
            if texts is not None:
                eval_rows = text_rows(texts, voice, tokenizer, reference_clips)
            else:
                eval_rows = prepared_rows(dataset["input_ids"], tokenizer, snac, report_voices(prepared))
        LOG.info(f"Orpheus: evaluating {model_path} on {len(eval_rows)} rows")
        reports[label] = {"model": model_path, **evaluation.run(model, eval_rows, out / label)}
        del model
    (out / METRICS_FILE).write_text(json.dumps(reports, indent=2, ensure_ascii=False) + "\n")
    return reports


def metrics_table(reports: dict[str, dict]) -> str:
    """The mean scores of one or more runs side by side, one column per run (e.g. per checkpoint)."""
    names = list(reports)
    width = max(12, *(len(name) for name in names))
    lines = [f"{'':<28}" + "".join(f"{name:>{width + 2}}" for name in names)]
    for metric in METRICS:
        cells = "".join(f"{reports[name]['mean'][metric]:>{width + 2}.3f}" for name in names)
        lines.append(f"{metric.removeprefix('orpheus_'):<28}{cells}")
    return "\n".join(lines)
