"""`check-transcripts`: hear each clip of a raw dataset with Whisper and list the rows whose text it does not match.

A transcript that does not say what the clip says is the commonest cause of a bad fine-tune; the model learns to
skip or invent words. The dataset is read as `axolotl preprocess` reads it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from axolotl_orpheus import audio
from axolotl_orpheus.args import DEFAULT_MAX_CER
from axolotl_orpheus.listen import scoring
from axolotl_orpheus.listen.asr import ASR
from axolotl_orpheus.recordings.survey import open_dataset

CLIPS_PER_BATCH = 16


@dataclass
class Checked:
    row: int
    file: str
    text: str
    transcript: str
    language: str | None
    cer: float


def check_transcripts(
    path: str, asr: ASR | Callable[[], ASR], threshold: float = DEFAULT_MAX_CER, every_row: bool = False
) -> dict:
    """Every readable row's CER against Whisper's transcript; the report lists those over `threshold`, worst first,
    and with `every_row` (for `check`) every row heard, in order, under "checked".

    `asr`: the ASR, or what loads it (e.g. `functools.partial(ASR, name, device, language)`), called once the
    dataset is open: a wrong dataset path then fails in a second, not after a model load.
    """
    dataset, base_dir, audio_column, text_column, _ = open_dataset(path)
    if callable(asr):  # a loader; an ASR is not callable
        asr = asr()
    sources, texts = dataset[audio_column], dataset[text_column]
    checked: list[Checked] = []
    unreadable: list[dict] = []
    progress = tqdm(total=len(dataset), desc="Orpheus: transcribing clips", unit="clip")
    with progress:
        for start in range(0, len(dataset), CLIPS_PER_BATCH):
            rows, clips = [], []
            for row in range(start, min(start + CLIPS_PER_BATCH, len(dataset))):
                try:
                    clips.append(audio.load_checked_clip(sources[row], base_dir).samples)
                    rows.append(row)
                except audio.AudioError as error:
                    unreadable.append({"row": row, "file": audio.describe_source(sources[row]), "error": str(error)})
            for row, heard in zip(rows, asr.transcribe(clips, audio.SAMPLE_RATE) if clips else []):
                text = "" if texts[row] is None else str(texts[row])
                normalised = [scoring.normalise(t, heard.language, asr.english_spelling) for t in (text, heard.text)]
                cer = scoring.character_error_rate(*normalised)
                checked.append(Checked(row, audio.describe_source(sources[row]), text, heard.text, heard.language, cer))
            progress.update(min(CLIPS_PER_BATCH, len(dataset) - start))
    flagged = sorted((c for c in checked if c.cer > threshold), key=lambda c: (-c.cer, c.row))
    cers = np.array([c.cer for c in checked])
    return {
        "dataset": path,
        "asr_model": asr.name,
        "threshold": threshold,
        "summary": {
            "rows": len(dataset),
            "checked": len(checked),
            "flagged": len(flagged),
            "unreadable": len(unreadable),
            "median_cer": float(np.median(cers)) if len(cers) else None,
            "mean_cer": float(cers.mean()) if len(cers) else None,
        },
        "flagged": [asdict(c) for c in flagged],
        "unreadable": unreadable,
        **({"checked": [asdict(c) for c in checked]} if every_row else {}),
    }


def write_report(report: dict, out: Path) -> list[Path]:
    """OUT.json (everything) and OUT.csv (the flagged rows, worst first), for a spreadsheet."""
    json_path, csv_path = out.with_suffix(".json"), out.with_suffix(".csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[name for name in Checked.__dataclass_fields__])
        writer.writeheader()
        writer.writerows(report["flagged"])
    return [json_path, csv_path]


def summary_text(report: dict) -> str:
    summary = report["summary"]
    lines = [
        f"{report['dataset']}: {summary['checked']} of {summary['rows']} clips transcribed by {report['asr_model']}; "
        f"{summary['flagged']} over CER {report['threshold']:g}, {summary['unreadable']} unreadable"
    ]
    if summary["median_cer"] is not None:
        lines.append(f"  CER median {summary['median_cer']:.3f}, mean {summary['mean_cer']:.3f}")
    for flagged in report["flagged"][:10]:
        lines.append(
            f"  row {flagged['row']} ({flagged['file']}) CER {flagged['cer']:.2f}: "
            f"{flagged['text']!r} heard as {flagged['transcript']!r}"
        )
    if len(report["flagged"]) > 10:
        lines.append(f"  ... and {len(report['flagged']) - 10} more in the report")
    return "\n".join(lines)
