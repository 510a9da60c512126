"""What every saved voice carries for whoever loads it, written by the plugin into output_dir and each checkpoint,
and by `share` into the voice folder:

- generation_config.json: Orpheus' stop token (end_of_speech), the pad id and its sampling, which `generate`, the
  transformers pipeline and vLLM read, so they stop where Orpheus stops;
- orpheus_voice.json (listen/voice.VoiceInfo): the voices, the prompt form, the SNAC model, the package version;
- orpheus_report.json: the report of the prepared rows it was trained on, for the card's data summary.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from transformers import GenerationConfig, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from axolotl_orpheus import __version__, layout
from axolotl_orpheus.args import OrpheusArgs
from axolotl_orpheus.listen.voice import SPEAKER_PROMPT, TEXT_PROMPT, Sampling, VoiceInfo
from axolotl_orpheus.prepare.report import REPORT_FILE, write_report

LOG = logging.getLogger(__name__)

GENERATION_CONFIG = "generation_config.json"


def generation_config() -> GenerationConfig:
    """Orpheus' generation defaults: stop at end_of_speech, pad with <custom_token_7>, sample as canopy's engine."""
    return GenerationConfig(
        bos_token_id=layout.START_OF_TEXT,
        eos_token_id=layout.END_OF_SPEECH,
        pad_token_id=layout.PAD,
        do_sample=True,
        **asdict(Sampling()),
    )


def voice_info(report: dict | None, snac_model: str) -> VoiceInfo:
    """The voice file for a model trained on the rows `report` describes (a prepared dataset's report).

    Without a report the voices are unknown: the speaker prompt form with no voices listed, so that a loader uses
    any voice name as written rather than dropping it.
    """
    speakers = (report or {}).get("total", {}).get("speakers", {})
    voices = {
        name: {"clips": entry["rows"], "hours": entry["hours"]} for name, entry in sorted(speakers.items()) if name
    }
    prompt = SPEAKER_PROMPT if voices or report is None else TEXT_PROMPT
    return VoiceInfo(voices=voices, prompt=prompt, snac_model=snac_model, package_version=__version__)


@dataclass(frozen=True)
class Stamp:
    """The files a saved voice carries (module docstring)."""

    info: VoiceInfo
    report: dict | None  # the training rows' report; None when they were prepared without one

    def write(self, folder: Path) -> None:
        folder = Path(folder)
        generation_config().save_pretrained(folder)
        self.info.write(folder)
        if self.report is not None:
            write_report(self.report, folder)

    @classmethod
    def read(cls, folder: Path) -> Stamp | None:
        """The stamp a training run (or `share`) left in `folder`, or None when it has no voice file."""
        info = VoiceInfo.read(folder)
        report_path = Path(folder) / REPORT_FILE
        report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else None
        return None if info is None else cls(info, report)


def prepared_report(prepared: Path) -> dict | None:
    path = Path(prepared) / REPORT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def training_stamp(cfg, tokenizer_name: str) -> Stamp:
    """The stamp for a model trained on `cfg`'s datasets: their report, where `axolotl preprocess` wrote one."""
    from axolotl_orpheus.plugin import prepared_folder

    report = prepared_report(prepared_folder(cfg, cfg.datasets, tokenizer_name)) if cfg.datasets else None
    if report is None:
        LOG.warning(
            "Orpheus: no orpheus_report.json for the training rows (they were prepared by `axolotl train`, not "
            "`axolotl preprocess`): the checkpoints' orpheus_voice.json lists no voices. To fix: run "
            "`axolotl preprocess` before `axolotl train`"
        )
    return Stamp(voice_info(report, OrpheusArgs.from_cfg(cfg).orpheus_snac_model), report)


class StampCallback(TrainerCallback):
    """Writes the stamp into each checkpoint the trainer saves, on the main process."""

    def __init__(self, stamp: Stamp) -> None:
        self.stamp = stamp

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and checkpoint.is_dir():
            self.stamp.write(checkpoint)
