"""`axolotl-orpheus check`: the dataset looked at before training, read as `axolotl preprocess` reads it. Each
clip's audio quality (DNSMOS OVRL, SIG, BAK and P.808, its peak level and share of clipped samples, from
prepare/screening.py) and, unless asked not to, how far its transcript is from what Whisper hears (the
`check-transcripts` pass, recordings/transcripts.py).

Noise, echo, music beds and distortion in the clips come out of the fine-tune; so do transcripts that do not say
what the clip says. The reports list the clips worst first, to listen to and fix or drop.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from axolotl_orpheus import audio
from axolotl_orpheus.args import DEFAULT_MAX_CER
from axolotl_orpheus.listen.quality import THRESHOLDS
from axolotl_orpheus.prepare import screening
from axolotl_orpheus.prepare.cache import default_root
from axolotl_orpheus.prepare.report import distribution, pyplot
from axolotl_orpheus.recordings.survey import open_dataset

# The CSV's columns, in order; the JSON's rows hold them all, and the transcript's when it was heard.
COLUMNS = (
    "row",
    "file",
    "speaker",
    "seconds",
    "dnsmos_ovrl",
    "dnsmos_sig",
    "dnsmos_bak",
    "dnsmos_p808",
    "peak_dbfs",
    "clipped_share",
    "cer",
    "text",
    "transcript",
)
HISTOGRAM_BINS = np.arange(1.0, 5.01, 0.1)


def check_dataset(path: str, device: str | None = None, asr=None, max_cer: float = DEFAULT_MAX_CER) -> dict:
    """Every readable clip's quality and, with an `asr` (a listen.asr.ASR, or what loads it once the audio is
    judged), its transcript's CER. The scores are cached where preprocessing's are by default (orpheus_codes_cache:
    true)."""
    from axolotl_orpheus.prepare.encoding import AudioColumn
    from axolotl_orpheus.tts import speaker_text

    dataset, base_dir, audio_column, text_column, speaker_column = open_dataset(path)
    sources = dataset[audio_column]
    speakers = dataset[speaker_column] if speaker_column else [None] * len(dataset)
    keys, unreadable = {}, {}
    for row, source in enumerate(sources):
        try:
            keys[row] = audio.content_key(source, base_dir)
        except audio.AudioError as error:
            unreadable[row] = error
    scores, errors = screening.score_rows(keys, AudioColumn(dataset, audio_column, base_dir), default_root(), device)
    unreadable.update(errors)
    rows = {}
    for row, quality in scores.items():
        rows[row] = {
            "row": row,
            "file": audio.describe_source(sources[row]),
            "speaker": "" if speakers[row] is None else speaker_text(speakers[row]),
            "seconds": round(quality.seconds, 3),
            "dnsmos_ovrl": round(quality.ovrl, 4),
            "dnsmos_sig": round(quality.sig, 4),
            "dnsmos_bak": round(quality.bak, 4),
            "dnsmos_p808": round(quality.p808, 4),
            "peak_dbfs": round(20 * math.log10(quality.peak), 2) if quality.peak > 0 else None,
            "clipped_share": round(quality.clipped, 6),
        }
    transcripts = None
    if asr is not None:
        from axolotl_orpheus.recordings.transcripts import check_transcripts

        transcripts = check_transcripts(path, asr, max_cer, every_row=True)
        for heard in transcripts.pop("checked"):
            if heard["row"] in rows:
                rows[heard["row"]].update(
                    cer=round(heard["cer"], 4), text=heard["text"], transcript=heard["transcript"]
                )
    ordered = sorted(rows.values(), key=lambda entry: (entry["dnsmos_ovrl"], entry["row"]))
    return {
        "dataset": path,
        "settings": {
            "max_cer": max_cer if transcripts else None,
            "asr_model": transcripts["asr_model"] if transcripts else None,
        },
        "summary": summarize(ordered, len(dataset), len(unreadable)),
        "rows": ordered,
        "unreadable": [
            {"row": row, "file": audio.describe_source(sources[row]), "reason": error.reason, "error": str(error)}
            for row, error in sorted(unreadable.items())
        ],
        "transcripts": transcripts,
    }


def summarize(rows: list[dict], total: int, unreadable: int) -> dict:
    """The clips and hours under each threshold, the OVRL distribution (in all, per speaker), the clipped clips."""
    summary: dict = {"rows": total, "scored": len(rows), "unreadable": unreadable}
    if not rows:
        return summary
    for threshold in THRESHOLDS:
        under = [entry for entry in rows if entry["dnsmos_ovrl"] < threshold]
        summary[f"under_{threshold:g}"] = {
            "clips": len(under),
            "hours": round(sum(entry["seconds"] for entry in under) / 3600, 4),
        }
    summary["hours"] = round(sum(entry["seconds"] for entry in rows) / 3600, 4)
    summary["dnsmos_ovrl"] = distribution([entry["dnsmos_ovrl"] for entry in rows])
    speakers = sorted({entry["speaker"] for entry in rows})
    summary["dnsmos_ovrl_by_speaker"] = {
        name: distribution([entry["dnsmos_ovrl"] for entry in rows if entry["speaker"] == name]) for name in speakers
    }
    summary["clipping"] = sum(entry["clipped_share"] >= audio.CLIPPING_FRACTION for entry in rows)
    cers = [entry["cer"] for entry in rows if entry.get("cer") is not None]
    if cers:
        summary["median_cer"] = float(np.median(cers))
    return summary


def write_reports(report: dict, out: Path) -> list[Path]:
    """OUT.csv (every scored clip, worst OVRL first), OUT.json (everything) and OUT.png (OVRL per speaker)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out.with_suffix(".json"), out.with_suffix(".csv")
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(report["rows"])
    return [csv_path, json_path, plot(report, out.with_suffix(".png"))]


def plot(report: dict, png: Path) -> Path:
    """A histogram of the clips' DNSMOS OVRL for each speaker, with the thresholds marked."""
    plt = pyplot()
    speakers = sorted({entry["speaker"] for entry in report["rows"]}) or [""]
    figure, axes = plt.subplots(len(speakers), 1, figsize=(8, 2.2 + 1.6 * len(speakers)), sharex=True, squeeze=False)
    for axis, name in zip(axes[:, 0], speakers):
        scores = [entry["dnsmos_ovrl"] for entry in report["rows"] if entry["speaker"] == name]
        axis.hist(scores, bins=HISTOGRAM_BINS)
        for threshold in THRESHOLDS:
            axis.axvline(threshold, color="red", linestyle="--", linewidth=1)
        axis.set(ylabel="clips", title=f"{name or '(no speaker)'}: {len(scores)} clips")
    axes[-1, 0].set(xlabel="DNSMOS OVRL (1-5; dashed: " + ", ".join(f"{t:g}" for t in THRESHOLDS) + ")")
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)
    return png


def summary_text(report: dict) -> str:
    """A few lines for the terminal: the counts, the thresholds, the worst clips."""
    summary = report["summary"]
    lines = [
        f"{report['dataset']}: {summary['scored']} of {summary['rows']} clips scored"
        + (f", {summary['unreadable']} unreadable" if summary["unreadable"] else "")
    ]
    if not summary["scored"]:
        return "\n".join(lines)
    ovrl = summary["dnsmos_ovrl"]
    lines.append(
        f"  DNSMOS OVRL: min {ovrl['min']:.2f}, quartiles {ovrl['q1']:.2f} {ovrl['median']:.2f} {ovrl['q3']:.2f}, "
        f"max {ovrl['max']:.2f}"
    )
    for threshold in THRESHOLDS:
        under = summary[f"under_{threshold:g}"]
        lines.append(
            f"  under {threshold:g}: {under['clips']} clips, {under['hours']:.3f} of {summary['hours']:.3f} hours"
        )
    if summary["clipping"]:
        lines.append(f"  {summary['clipping']} clips clip (at least 0.1% of their samples at full scale)")
    if report["transcripts"] is not None:
        heard = report["transcripts"]["summary"]
        lines.append(
            f"  transcripts: {heard['flagged']} of {heard['checked']} over CER {report['settings']['max_cer']:g}"
            + (f", median CER {summary['median_cer']:.3f}" if "median_cer" in summary else "")
        )
    for entry in report["rows"][:5]:
        lines.append(f"  row {entry['row']} ({entry['file']}): OVRL {entry['dnsmos_ovrl']:.2f}")
    return "\n".join(lines)
