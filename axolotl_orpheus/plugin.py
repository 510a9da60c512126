"""OrpheusPlugin: makes raw audio datasets loadable and ties prepared rows to the orpheus_* settings."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from axolotl.integrations.base import BasePlugin

from axolotl_orpheus.args import FINGERPRINT_KEY, REPORTS_KEY, SPLIT_KEY, OrpheusArgs
from axolotl_orpheus.logs import show_info_logs
from axolotl_orpheus.prepare.report import DatasetReport, full_report, report_voices, summary_text, write_report
from axolotl_orpheus.prepare.sources import point_at_rows
from axolotl_orpheus.reproducible import files_digest

LOG = logging.getLogger(__name__)

STRATEGY_TYPE = "axolotl_orpheus.tts"


def pin_fingerprint(prepared: Path) -> None:
    """Make the saved dataset's fingerprint a digest of its rows.

    axolotl's later transforms (shuffle, length filter) hash their num_proc into the fingerprint, so the same
    rows saved under another dataset_num_proc would differ in state.json alone. A content digest keeps the
    prepared folder byte-identical for identical rows.
    """
    state_file = prepared / "state.json"
    state = json.loads(state_file.read_text())
    digest = files_digest(prepared / data_file["filename"] for data_file in state["_data_files"])
    state["_fingerprint"] = digest[:16]
    state_file.write_text(json.dumps(state, indent=2, sort_keys=True))


def prepared_folder(cfg, entries: list, tokenizer_name: str) -> Path:
    """Where axolotl saves (and finds) the prepared rows of these dataset entries."""
    from axolotl.utils.data.shared import generate_dataset_hash_from_config, get_prepared_dataset_path

    return Path(get_prepared_dataset_path(cfg, generate_dataset_hash_from_config(cfg, entries, tokenizer_name)))


def prepared_voices(cfg, tokenizer_name: str) -> set[str]:
    """The speaker names in the prepared rows' reports (train and test), to read "tara: Hello" back as a voice."""
    return {
        voice
        for entries in (cfg.datasets, cfg.test_datasets)
        if entries
        for voice in report_voices(prepared_folder(cfg, entries, tokenizer_name))
    }


def best_checkpoint_direction(cfg) -> bool | None:
    """greater_is_better for an Orpheus metric_for_best_model (None for another metric); refuses one that cannot
    choose a checkpoint."""
    from axolotl_orpheus.listen.evaluation import METRICS

    metric = cfg.get("metric_for_best_model")
    name = str(metric).removeprefix("eval_") if metric else None
    if name not in METRICS:
        return None
    if not OrpheusArgs.from_cfg(cfg).orpheus_eval_samples:
        raise ValueError(
            f"metric_for_best_model: {metric} is scored only with orpheus_eval_samples; set it (e.g. 8) and an eval "
            "split (val_set_size or test_datasets)"
        )
    greater_is_better = METRICS[name]
    if greater_is_better is None:
        raise ValueError(
            f"metric_for_best_model: {metric} is best at 1, neither high nor low, so it cannot choose a checkpoint; "
            "use eval_orpheus_cer (or eval_orpheus_speaker_similarity)"
        )
    return greater_is_better


class OrpheusPlugin(BasePlugin):
    """Fine-tune Orpheus TTS on raw audio + text with `type: axolotl_orpheus.tts` datasets."""

    def __init__(self) -> None:
        super().__init__()
        self.reports: list[DatasetReport] = []  # of the datasets encoded in this `axolotl preprocess`
        self.stamp = None  # what output_dir and each checkpoint carry for their loaders (share/stamp.py)

    def get_input_args(self) -> str:
        return "axolotl_orpheus.args.OrpheusArgs"

    def register(self, cfg: dict) -> None:
        """Rewrite the raw config's Orpheus dataset entries before axolotl validates and loads them."""
        show_info_logs()  # the package's INFO lines in axolotl's log, as axolotl's own
        fingerprint = OrpheusArgs.from_cfg(cfg).fingerprint()
        best_checkpoint_direction(cfg)  # refuses a metric that cannot choose a checkpoint when the config loads
        for key in ("datasets", "test_datasets"):
            for entry in cfg.get(key) or []:
                if str(entry.get("type", "")).startswith(STRATEGY_TYPE):
                    # Without a split, axolotl reads a test_datasets entry's test split, as here.
                    point_at_rows(entry, "test" if key == "test_datasets" else "train")
                    # axolotl's prepared-dataset hash ignores plugin keys: without this, `axolotl train`
                    # would reuse rows prepared under other orpheus_* settings.
                    entry["message_property_mappings"] = {
                        **(entry.get("message_property_mappings") or {}),
                        FINGERPRINT_KEY: fingerprint,
                        # Train and test rows are saved apart, each with its own report.
                        **({SPLIT_KEY: "test"} if key == "test_datasets" else {}),
                    }

    def load_datasets(self, cfg, preprocess: bool = False):
        """During `axolotl preprocess`: load the datasets as axolotl would, then write the report and pin
        the fingerprint.

        axolotl has no hook after it saves the prepared rows; taking over this one (and calling axolotl's
        own loader) is how the report lands beside them. Training loads datasets unchanged.
        """
        if not preprocess or cfg.rl:
            return None
        from axolotl.common.datasets import load_datasets
        from datasets import load_from_disk

        self.reports.clear()
        cfg[REPORTS_KEY] = self.reports  # each strategy adds its dataset's report
        try:
            dataset_meta = load_datasets(cfg=cfg)
        finally:
            del cfg[REPORTS_KEY]
        for split, entries in (("train", cfg.datasets), ("test", cfg.test_datasets)):
            reports = [report for report in self.reports if report.split == split]
            if not reports:  # prepared before: nothing was encoded or framed
                continue
            prepared = prepared_folder(cfg, entries, reports[0].tokenizer)
            pin_fingerprint(prepared)
            # Saved rows tell what axolotl dropped after the strategy only where every row is an Orpheus row.
            only_orpheus = all(str(entry.get("type", "")).startswith(STRATEGY_TYPE) for entry in entries)
            report = full_report(reports, rows_saved=load_from_disk(str(prepared)).num_rows if only_orpheus else None)
            path = write_report(report, prepared)
            LOG.info(f"All Orpheus {split} datasets:\n{summary_text(report['total'])}\nReport: {path}")
        return dataset_meta

    def get_training_args(self, cfg) -> dict:
        """The right greater_is_better for an Orpheus metric_for_best_model, whatever the config says.

        transformers takes a metric whose name does not end in "loss" as better when greater, and axolotl passes
        greater_is_better on only when it is true: left alone, eval_orpheus_cer would keep the worst checkpoint.
        """
        greater_is_better = best_checkpoint_direction(cfg)
        if greater_is_better is None:
            return {}
        if cfg.get("greater_is_better") not in (None, greater_is_better):
            LOG.warning(
                f"greater_is_better: {cfg.get('greater_is_better')} ignored: for {cfg.metric_for_best_model} "
                f"{'higher' if greater_is_better else 'lower'} is better"
            )
        return {"greater_is_better": greater_is_better}

    def add_callbacks_post_trainer(self, cfg, trainer) -> list:
        """Speak orpheus_sample_prompts at each evaluation and at the end of training; score orpheus_eval_samples
        rows of the eval split at each evaluation."""
        settings = OrpheusArgs.from_cfg(cfg)
        if not settings.orpheus_sample_prompts and not settings.orpheus_eval_samples:
            return []
        if cfg.fsdp or cfg.fsdp_config or cfg.deepspeed:
            # Sharded weights need every rank to take part in a forward pass; generating on one would hang.
            LOG.warning(
                "orpheus_sample_prompts, orpheus_eval_samples: no samples or scores under FSDP or DeepSpeed; speak "
                "and score after training with `axolotl-orpheus speak` and `axolotl-orpheus evaluate`"
            )
            return []
        from axolotl_orpheus.listen.callbacks import SpeechSamplesCallback, SpeechScorer

        callbacks = []
        if settings.orpheus_sample_prompts:
            callbacks.append(
                SpeechSamplesCallback(
                    settings.orpheus_sample_prompts,
                    trainer.processing_class,
                    settings.orpheus_snac_model,
                    settings.orpheus_sample_max_new_tokens,
                    trainer.callback_handler.callbacks,
                    settings.orpheus_cpu_kernels,
                )
            )
        if settings.orpheus_eval_samples and not trainer.eval_dataset:
            LOG.warning("orpheus_eval_samples: no eval split to score; set val_set_size or test_datasets")
        elif settings.orpheus_eval_samples:
            voices = prepared_voices(cfg, trainer.processing_class.name_or_path)
            callbacks.append(SpeechScorer(trainer, settings, voices))
        return callbacks

    def add_callbacks_pre_trainer(self, cfg, model) -> list:
        """Stamp each checkpoint: Orpheus' stop token and sampling, its voices, its data's report (share/stamp.py)."""
        from axolotl_orpheus.share.stamp import StampCallback, training_stamp

        self.stamp = training_stamp(cfg, cfg.tokenizer_config)
        return [StampCallback(self.stamp)]

    def post_train(self, cfg, model) -> None:
        """Stamp output_dir; axolotl calls this before and again after its final save, which the stamp outlasts."""
        from axolotl.utils.distributed import is_main_process

        if self.stamp is not None and is_main_process():
            self.stamp.write(Path(cfg.output_dir))
