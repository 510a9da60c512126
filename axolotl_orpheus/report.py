"""The preprocessing report: what went in, what came out, and why every other row did not.

Each Orpheus dataset fills one `DatasetReport` while it is encoded; `axolotl preprocess` then writes them
all to `orpheus_report.json` in the prepared dataset's folder and logs a short summary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPORT_FILE = "orpheus_report.json"
EXAMPLES = 5  # row indices kept per reason, to find the rows without listing thousands

# Why a row was dropped -> what to do about it (also the hint in `orpheus_on_bad_row: raise` errors).
DROP_REASONS = {
    "no_audio": "give every row audio: a file path or embedded audio bytes",
    "missing_file": "check the path; relative paths are resolved against the folder of the data file",
    "undecodable_audio": "re-export the file as wav or flac",
    "empty_audio": "remove the row, it holds no samples",
    "shorter_than_one_frame": "clips need at least one SNAC frame, 2048 samples at 24 kHz (85 ms)",
    "non_finite_samples": "the audio holds NaN or infinite samples; re-export it",
    "no_text": "give every row its transcript",
    "empty_text": "give every row its transcript",
    "text_not_string": "the transcript column must hold text",
    "empty_speaker": "give every row a speaker, or drop the speaker column for a single voice",
    "longer_than_max_seconds": "split the clip, or raise orpheus_max_seconds",
    "shorter_than_min_seconds": "lower orpheus_min_seconds to keep it",
    "longer_than_sequence_len": "split the clip or raise sequence_len (about 82 tokens per second of audio)",
}
# Kept, but worth a look.
WARNING_REASONS = {
    "silent_audio": "the clip is silent (peak below -80 dBFS)",
    "clipping": "at least 0.1% of the samples sit at full scale",
}


@dataclass
class DatasetReport:
    """What happened to one dataset's rows. Rows are counted once each, in the order they are encoded."""

    dataset: str
    tokenizer: str  # its name is part of axolotl's prepared-dataset hash, which locates the report's folder
    sequence_len: int | None = None
    rows_in: int = 0
    dropped: dict[str, list[int]] = field(default_factory=dict)
    warnings: dict[str, list[int]] = field(default_factory=dict)
    seconds_in: float = 0.0
    seconds_out: float = 0.0
    frames_removed: int = 0
    tokens: list[int] = field(default_factory=list)
    speaker_rows: dict[str, int] = field(default_factory=dict)
    speaker_seconds: dict[str, float] = field(default_factory=dict)

    def drop(self, reason: str, row: int, seconds: float = 0.0) -> None:
        self.dropped.setdefault(reason, []).append(row)
        self.seconds_in += seconds

    def warn(self, reason: str, row: int) -> None:
        self.warnings.setdefault(reason, []).append(row)

    def keep(self, seconds: float, tokens: int, frames_removed: int, speaker: str | None) -> None:
        self.seconds_in += seconds
        self.seconds_out += seconds
        self.tokens.append(tokens)
        self.frames_removed += frames_removed
        name = speaker or ""
        self.speaker_rows[name] = self.speaker_rows.get(name, 0) + 1
        self.speaker_seconds[name] = self.speaker_seconds.get(name, 0.0) + seconds


# The reports of the datasets encoded in this process, in order: the plugin writes them after preprocess.
COLLECTED: list[DatasetReport] = []


def _by_reason(reports: list[DatasetReport], attribute: str) -> dict[str, dict]:
    counted: dict[str, dict] = {}
    for report in reports:
        for reason, rows in getattr(report, attribute).items():
            entry = counted.setdefault(reason, {"count": 0, "examples": []})
            entry["count"] += len(rows)
            room = EXAMPLES - len(entry["examples"])
            entry["examples"] += [{"dataset": report.dataset, "row": row} for row in rows[:room]]
    return dict(sorted(counted.items()))


def summarize(reports: list[DatasetReport]) -> dict:
    """The report's figures over some datasets (one, or all of them for the total)."""
    tokens = np.array([t for report in reports for t in report.tokens], dtype=np.int64)
    sequence_len = next((r.sequence_len for r in reports if r.sequence_len), None)
    speakers: dict[str, dict] = {}
    for report in reports:
        for name, rows in report.speaker_rows.items():
            entry = speakers.setdefault(name, {"rows": 0, "hours": 0.0})
            entry["rows"] += rows
            entry["hours"] += report.speaker_seconds[name] / 3600
    return {
        "rows_in": sum(r.rows_in for r in reports),
        "rows_out": len(tokens),
        "dropped": _by_reason(reports, "dropped"),
        "warnings": _by_reason(reports, "warnings"),
        "audio_hours_in": round(sum(r.seconds_in for r in reports) / 3600, 6),
        "audio_hours_out": round(sum(r.seconds_out for r in reports) / 3600, 6),
        "frames_removed_by_dedupe": sum(r.frames_removed for r in reports),
        "tokens_per_row": {
            "min": int(tokens.min()) if len(tokens) else None,
            "median": float(np.median(tokens)) if len(tokens) else None,
            "max": int(tokens.max()) if len(tokens) else None,
            "sequence_len": sequence_len,
        },
        "speakers": {name: {"rows": e["rows"], "hours": round(e["hours"], 6)} for name, e in sorted(speakers.items())},
    }


def full_report(reports: list[DatasetReport]) -> dict:
    return {"total": summarize(reports), "datasets": [{"dataset": r.dataset, **summarize([r])} for r in reports]}


def write_report(reports: list[DatasetReport], folder: Path) -> Path:
    path = Path(folder) / REPORT_FILE
    path.write_text(json.dumps(full_report(reports), indent=2) + "\n", encoding="utf-8")
    return path


def summary_text(summary: dict) -> str:
    """A few lines for the log."""
    tokens = summary["tokens_per_row"]
    lines = [
        f"Orpheus: {summary['rows_out']} of {summary['rows_in']} rows kept, "
        f"{summary['audio_hours_out'] * 60:.1f} of {summary['audio_hours_in'] * 60:.1f} minutes of audio; "
        f"{summary['frames_removed_by_dedupe']} duplicate frames removed",
        f"  tokens per row: min {tokens['min']}, median {tokens['median']}, max {tokens['max']} "
        f"(sequence_len {tokens['sequence_len']})",
    ]
    for kind, hints in (("dropped", DROP_REASONS), ("warnings", WARNING_REASONS)):
        for reason, entry in summary[kind].items():
            rows = ", ".join(str(e["row"]) for e in entry["examples"])
            lines.append(f"  {kind} {reason}: {entry['count']} (e.g. rows {rows}): {hints[reason]}")
    return "\n".join(lines)
