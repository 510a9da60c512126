"""The preprocessing report: what went in, what came out, and why every other row did not.

Each Orpheus dataset fills one `DatasetReport` while it is encoded; `axolotl preprocess` then writes them
all to `orpheus_report.json` in the prepared dataset's folder and logs a short summary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from axolotl_orpheus.errors import UserError

REPORT_FILE = "orpheus_report.json"
EXAMPLES = 5  # row indices kept per reason, to find the rows without listing thousands
DEDUPE_MOST = 0.5  # more of the frames than this removed as duplicates is a warning
HISTOGRAM_BINS = 20

# Why a row was dropped -> what to do about it (also the hint in `orpheus_on_bad_row: raise` errors).
DROP_REASONS = {
    "no_audio": "give every row audio: a file path or embedded audio bytes",
    "missing_file": "check the path; relative paths are resolved against the folder of the data file",
    "unreadable_file": "make the file readable: check its permissions, and the disk or network share it is on",
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
    "low_quality": "its DNSMOS OVRL is under orpheus_min_dnsmos: listen to it (noise, echo, music, distortion); "
    "clean or replace it, or lower orpheus_min_dnsmos",
}
# What axolotl may drop after the strategy, before it saves the rows.
AXOLOTL_DROPS = (
    "axolotl's own steps after the Orpheus strategy: dataset_exact_deduplication, sample packing's row checks"
)
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
    split: str = "train"  # or "test": a test_datasets entry, saved and reported apart
    rows_in: int = 0
    dropped: dict[str, list[int]] = field(default_factory=dict)
    warnings: dict[str, list[int]] = field(default_factory=dict)
    seconds_in: float = 0.0
    seconds_out: float = 0.0
    frames_removed: int = 0
    frames_before_dedupe: int = 0  # of the kept clips' codes
    tokens: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # of each kept clip
    speaker_rows: dict[str, int] = field(default_factory=dict)
    speaker_seconds: dict[str, float] = field(default_factory=dict)
    codes_repaired: int = 0  # damaged codes cache entries, encoded again
    dnsmos: dict[str, list[float]] = field(default_factory=dict)  # each scored clip's DNSMOS OVRL, by speaker
    encode_retries: int = 0  # Ray encoding actors restarted after a lost worker or node (their blocks encoded again)

    def drop(self, reason: str, row: int, seconds: float = 0.0) -> None:
        self.dropped.setdefault(reason, []).append(row)
        self.seconds_in += seconds

    def warn(self, reason: str, row: int) -> None:
        self.warnings.setdefault(reason, []).append(row)

    def scored(self, speaker: str | None, ovrl: float) -> None:
        self.dnsmos.setdefault(speaker or "", []).append(ovrl)

    def keep(self, seconds: float, tokens: int, frames_removed: int, speaker: str | None, *, frames: int) -> None:
        """A kept row: its clip's seconds, its tokens, its clip's `frames` and how many of them dedupe removed."""
        self.frames_before_dedupe += frames
        self.seconds_in += seconds
        self.seconds_out += seconds
        self.tokens.append(tokens)
        self.seconds.append(seconds)
        self.frames_removed += frames_removed
        name = speaker or ""
        self.speaker_rows[name] = self.speaker_rows.get(name, 0) + 1
        self.speaker_seconds[name] = self.speaker_seconds.get(name, 0.0) + seconds


def _by_reason(reports: list[DatasetReport], attribute: str) -> dict[str, dict]:
    counted: dict[str, dict] = {}
    for report in reports:
        for reason, rows in getattr(report, attribute).items():
            entry = counted.setdefault(reason, {"count": 0, "examples": []})
            entry["count"] += len(rows)
            room = EXAMPLES - len(entry["examples"])
            entry["examples"] += [{"dataset": report.dataset, "row": row} for row in rows[:room]]
    return dict(sorted(counted.items()))


def _histogram(values: np.ndarray, top: float) -> dict:
    counts, edges = np.histogram(values, bins=HISTOGRAM_BINS, range=(0, top or 1))
    return {"edges": [round(float(e), 3) for e in edges], "counts": counts.tolist()}


def summarize(reports: list[DatasetReport]) -> dict:
    """The report's figures over some datasets (one, or all of them for the total)."""
    tokens = np.array([t for report in reports for t in report.tokens], dtype=np.int64)
    seconds = np.array([s for report in reports for s in report.seconds], dtype=np.float64)
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
        "frames_before_dedupe": sum(r.frames_before_dedupe for r in reports),
        "codes_cache_entries_repaired": sum(r.codes_repaired for r in reports),
        "encode_retries": sum(r.encode_retries for r in reports),
        "tokens_per_row": {
            "min": int(tokens.min()) if len(tokens) else None,
            "median": float(np.median(tokens)) if len(tokens) else None,
            "max": int(tokens.max()) if len(tokens) else None,
            "sequence_len": sequence_len,
            "histogram": _histogram(tokens, max(sequence_len or 0, int(tokens.max()) if len(tokens) else 0)),
        },
        "clip_seconds_histogram": _histogram(seconds, float(seconds.max()) if len(seconds) else 0),
        "speakers": {name: {"rows": e["rows"], "hours": round(e["hours"], 6)} for name, e in sorted(speakers.items())},
        **_dnsmos(reports),
    }


def distribution(values: list[float]) -> dict:
    """The clips, min, quartiles and max of some scores."""
    low, first, median, third, high = np.quantile(values, [0, 0.25, 0.5, 0.75, 1]).tolist()
    rounded = {"min": low, "q1": first, "median": median, "q3": third, "max": high}
    return {"clips": len(values), **{name: round(value, 3) for name, value in rounded.items()}}


def _dnsmos(reports: list[DatasetReport]) -> dict:
    """The DNSMOS OVRL distribution of the scored clips (kept or not), in all and per speaker, when they were scored."""
    speakers: dict[str, list[float]] = {}
    for report in reports:
        for name, scores in report.dnsmos.items():
            speakers.setdefault(name, []).extend(scores)
    if not speakers:
        return {}
    every = [score for scores in speakers.values() for score in scores]
    per_speaker = {name: distribution(scores) for name, scores in sorted(speakers.items())}
    return {"dnsmos_ovrl": {**distribution(every), "speakers": per_speaker}}


def full_report(reports: list[DatasetReport], rows_saved: int | None = None) -> dict:
    """The total and each dataset's figures. `rows_saved`: the rows axolotl saved, which its steps after the
    strategy (dataset_exact_deduplication, sample packing's checks) may make fewer: the total's rows_out is
    then what was saved, and the difference is counted."""
    total = summarize(reports)
    if rows_saved is not None and rows_saved != total["rows_out"]:
        total["dropped_by_axolotl"] = {"count": total["rows_out"] - rows_saved, "why": AXOLOTL_DROPS}
        total["rows_out"] = rows_saved
    return {"total": total, "datasets": [{"dataset": r.dataset, **summarize([r])} for r in reports]}


def report_voices(folder: Path) -> set[str]:
    """The speaker names of the prepared rows in `folder`, from their report (none when it has no report)."""
    path = Path(folder) / REPORT_FILE
    return {name for name in json.loads(path.read_text())["total"]["speakers"] if name} if path.is_file() else set()


def write_report(report: dict, folder: Path) -> Path:
    path = Path(folder) / REPORT_FILE
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path


def dedupe_warning(summary: dict) -> str | None:
    """A warning where duplicate-frame removal dropped most frames, as speech never makes it do."""
    removed, frames = summary["frames_removed_by_dedupe"], summary.get("frames_before_dedupe")  # a file may lack it
    if not frames or removed <= DEDUPE_MOST * frames:
        return None
    return (
        f"duplicate-frame removal dropped {removed} of {frames} frames: SNAC gives most frames the same first code "
        "only for silent audio or with another model's weights; check orpheus_snac_model (hubertsiuzdak/snac_24khz) "
        "and listen to a row (axolotl-orpheus decode)"
    )


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
    warning = dedupe_warning(summary)
    if warning:
        lines.append(f"  warning: {warning}")
    if summary.get("dropped_by_axolotl"):
        dropped = summary["dropped_by_axolotl"]["count"]
        lines.append(f"  dropped by axolotl after the strategy: {dropped} ({AXOLOTL_DROPS})")
    if summary.get("codes_cache_entries_repaired"):  # .get: a report file may lack it (`report` reads any)
        lines.append(f"  codes cache: {summary['codes_cache_entries_repaired']} damaged entries encoded again")
    if summary.get("dnsmos_ovrl"):
        ovrl = summary["dnsmos_ovrl"]
        lines.append(
            f"  DNSMOS OVRL of {ovrl['clips']} clips: min {ovrl['min']:.2f}, quartiles {ovrl['q1']:.2f} "
            f"{ovrl['median']:.2f} {ovrl['q3']:.2f}, max {ovrl['max']:.2f}"
        )
    if summary.get("encode_retries"):
        lines.append(f"  encoding: {summary['encode_retries']} Ray actors restarted, their blocks encoded again")
    for kind, hints in (("dropped", DROP_REASONS), ("warnings", WARNING_REASONS)):
        for reason, entry in summary[kind].items():
            rows = ", ".join(str(e["row"]) for e in entry["examples"])
            lines.append(f"  {kind} {reason}: {entry['count']} (e.g. rows {rows}): {hints[reason]}")
    return "\n".join(lines)


def report_table(report: dict) -> str:
    """The report's main figures, one line per dataset and the total, then the reasons."""
    header = f"{'dataset':<48} {'rows in':>8} {'rows out':>8} {'hours in':>9} {'hours out':>9} {'dropped':>8}"
    lines = [header, "-" * len(header)]
    for name, part in [*((d["dataset"], d) for d in report["datasets"]), ("total", report["total"])]:
        dropped = sum(entry["count"] for entry in part["dropped"].values())
        lines.append(
            f"{name if len(name) <= 48 else '...' + name[-45:]:<48} {part['rows_in']:>8} {part['rows_out']:>8} "
            f"{part['audio_hours_in']:>9.3f} "
            f"{part['audio_hours_out']:>9.3f} {dropped:>8}"
        )
    return "\n".join(lines) + "\n\n" + summary_text(report["total"])


def pyplot():
    """matplotlib's pyplot, drawing to files only."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
    except ModuleNotFoundError as exc:
        raise UserError("the report plot needs matplotlib: pip install 'axolotl-orpheus[plots]'") from exc
    return plt


def plot_report(report: dict, png: Path) -> Path:
    """A PNG of the clip-duration histogram, hours per speaker, and tokens per row against sequence_len."""
    plt = pyplot()
    total = report["total"]
    figure, (durations, speakers, tokens) = plt.subplots(1, 3, figsize=(16, 4.5))
    for axis, histogram, label in (
        (durations, total["clip_seconds_histogram"], "clip duration (s)"),
        (tokens, total["tokens_per_row"]["histogram"], "tokens per row"),
    ):
        edges = histogram["edges"]
        axis.stairs(histogram["counts"], edges, fill=True)
        axis.set(xlabel=label, ylabel="rows")
    durations.set_title(f"{total['rows_out']} clips, {total['audio_hours_out']:.3g} hours")
    sequence_len = total["tokens_per_row"]["sequence_len"]
    if sequence_len:
        tokens.axvline(sequence_len, color="red", linestyle="--", label=f"sequence_len {sequence_len}")
        tokens.legend()
    tokens.set_title("tokens per row")
    names = list(total["speakers"]) or [""]
    hours = [total["speakers"].get(name, {}).get("hours", 0) for name in names]
    speakers.barh([name or "(no speaker)" for name in names], hours)
    speakers.set(xlabel="hours", title="hours per speaker")
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)
    return png
