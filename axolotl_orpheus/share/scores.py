"""The scores a shared voice publishes: `evaluate`'s (its OUT/metrics.json), else the training's best evaluation
(the eval_orpheus_* of trainer_state.json), with where they came from and which models heard the samples."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from axolotl_orpheus.errors import UserError
from axolotl_orpheus.listen.callbacks import SAMPLES_FOLDER
from axolotl_orpheus.listen.evaluation import METRICS, METRICS_FILE

SCORES_FILE = "scores.json"
TRAINER_STATE = "trainer_state.json"
# What each score says, for the card (README's table, docs/evaluation.md).
MEANINGS = {
    "orpheus_cer": "character error rate of Whisper's transcript of the sample against its text",
    "orpheus_wer": "word error rate of the same",
    "orpheus_speaker_similarity": "cosine of the speaker embeddings of the sample and of the voice's own audio",
    "orpheus_stop_rate": "share of samples that ended with end_of_speech within the token budget",
    "orpheus_duration_ratio": "sample seconds over the reference's: rambling above 1, clipping below",
    "orpheus_loop_rate": "share of transcripts repeating a run of 4+ words the text does not repeat",
    "orpheus_dnsmos": "DNSMOS' estimate of the sample's overall audio quality, 1 to 5",
}


@dataclass
class Scores:
    means: dict[str, float]  # orpheus_cer, ... as METRICS names them
    source: str  # where they come from, in words
    asr_model: str | None  # None: not recorded
    speaker_model: str | None
    samples: int | None  # how many samples were scored

    def write(self, folder: Path) -> Path:
        path = Path(folder) / SCORES_FILE
        path.write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def evaluate_scores(folder: Path, model: Path) -> Scores:
    """The scores `evaluate --out FOLDER` wrote for `model` (or for its only model)."""
    path = Path(folder) / METRICS_FILE
    not_evaluate = f"{folder} is not `evaluate` output"
    fix = "To fix: give the --out folder of `axolotl-orpheus evaluate --model CHECKPOINT --out OUT`"
    try:
        reports = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"{not_evaluate}: cannot read {path} ({type(error).__name__}). {fix}") from error
    if not isinstance(reports, dict) or not all(
        isinstance(report, dict) and isinstance(report.get("mean"), dict) and "model" in report
        for report in reports.values()
    ):
        raise UserError(f"{not_evaluate}: {path} holds no scored models. {fix}")
    matching = [label for label, report in reports.items() if same_path(report["model"], model)]
    if len(matching) != 1 and len(reports) != 1:
        raise UserError(
            f"{path} scores {sorted(reports)}, none of them {model}. To fix: evaluate this checkpoint "
            f"(`evaluate --model {model}`), or give the checkpoint those scores are for"
        )
    label = matching[0] if len(matching) == 1 else next(iter(reports))
    report = reports[label]
    return Scores(
        {name: report["mean"][name] for name in METRICS if name in report["mean"]},
        f"`axolotl-orpheus evaluate` of {report['model']} ({path.name}, seed {report.get('seed')})",
        report.get("asr_model"),
        report.get("speaker_model"),
        len(report.get("samples", [])) or None,
    )


def same_path(a: str, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def training_scores(checkpoint: Path, config: dict | None) -> Scores | None:
    """The best evaluation's eval_orpheus_* in the training's trainer_state.json (None when none scored).

    The best is the evaluation of trainer_state's best_global_step (metric_for_best_model's choice), else the last.
    """
    state_path = trainer_state(Path(checkpoint))
    if state_path is None:
        return None
    state = json.loads(state_path.read_text(encoding="utf-8"))
    scored = [entry for entry in state.get("log_history", []) if any(f"eval_{name}" in entry for name in METRICS)]
    if not scored:
        return None
    best = [entry for entry in scored if entry.get("step") == state.get("best_global_step")]
    entry = (best or scored)[-1]
    step = entry.get("step")
    chosen = "the best by metric_for_best_model" if best else "the last one scored"
    # The samples' metrics.json names the ASR and speaker models that scored them.
    samples = Path(checkpoint) / SAMPLES_FOLDER, Path(checkpoint).parent / SAMPLES_FOLDER
    metrics = next(
        (folder / f"step-{step}" / METRICS_FILE for folder in samples if (folder / f"step-{step}").is_dir()), None
    )
    heard = json.loads(metrics.read_text(encoding="utf-8")) if metrics and metrics.is_file() else {}
    config = config or {}
    return Scores(
        {name: entry[f"eval_{name}"] for name in METRICS if f"eval_{name}" in entry},
        f"the training's evaluation at step {step}, {chosen} ({TRAINER_STATE})",
        heard.get("asr_model") or config.get("orpheus_asr_model"),
        heard.get("speaker_model") or config.get("orpheus_speaker_model"),
        len(heard.get("samples", [])) or config.get("orpheus_eval_samples"),
    )


def trainer_state(folder: Path) -> Path | None:
    """The folder's trainer_state.json, else its newest checkpoint's (output_dir holds none of its own)."""
    if (folder / TRAINER_STATE).is_file():
        return folder / TRAINER_STATE
    checkpoints = sorted(folder.glob(f"checkpoint-*/{TRAINER_STATE}"), key=lambda path: checkpoint_step(path.parent))
    return checkpoints[-1] if checkpoints else None


def checkpoint_step(folder: Path) -> int:
    suffix = folder.name.rpartition("-")[2]
    return int(suffix) if suffix.isdigit() else -1
