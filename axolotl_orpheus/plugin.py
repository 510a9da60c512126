"""OrpheusPlugin: makes raw audio datasets loadable and ties prepared rows to the orpheus_* settings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from axolotl.integrations.base import BasePlugin
from axolotl.utils.logging import get_logger

from axolotl_orpheus import __version__
from axolotl_orpheus.args import OrpheusArgs
from axolotl_orpheus.report import COLLECTED, summarize, summary_text, write_report

LOG = get_logger(__name__)

STRATEGY_TYPE = "axolotl_orpheus.tts"
# The key under each Orpheus dataset entry's `message_property_mappings` that holds the settings'
# fingerprint. That field survives validation and is part of axolotl's prepared-dataset hash.
FINGERPRINT_KEY = "orpheus_settings"
# An audiofolder's metadata file and the axolotl `ds_type` that reads it.
METADATA_FILES = {"metadata.csv": "csv", "metadata.jsonl": "json"}


def settings_fingerprint(settings: OrpheusArgs) -> str:
    """A digest of the orpheus_* settings that shape rows and of this package's version."""
    return hashlib.md5(f"{__version__}|{json.dumps(settings.row_settings(), sort_keys=True)}".encode()).hexdigest()


def point_folder_at_metadata(entry) -> None:
    """`path: <audiofolder>` -> its metadata file with the matching ds_type.

    axolotl would load a folder with datasets' audiofolder builder, which needs torchcodec (it cannot
    load beside a CPU torch). Reading the metadata file instead gives rows with a `file_name` column
    that the strategy decodes itself, relative to the folder.
    """
    folder = Path(str(entry.get("path") or ""))
    if entry.get("data_files") or not folder.is_dir():
        return
    for name, ds_type in METADATA_FILES.items():
        if (folder / name).is_file():
            entry["path"] = str(folder / name)
            entry["ds_type"] = ds_type
            LOG.info(f"Orpheus: reading audiofolder {folder} through {name}")
            return


def pin_fingerprint(prepared: Path) -> None:
    """Make the saved dataset's fingerprint a digest of its rows.

    axolotl's later transforms (shuffle, length filter) hash their num_proc into the fingerprint, so the same
    rows saved under another dataset_num_proc would differ in state.json alone. A content digest keeps the
    prepared folder byte-identical for identical rows.
    """
    state_file = prepared / "state.json"
    state = json.loads(state_file.read_text())
    digest = hashlib.sha256()
    for data_file in state["_data_files"]:
        with open(prepared / data_file["filename"], "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    state["_fingerprint"] = digest.hexdigest()[:16]
    state_file.write_text(json.dumps(state, indent=2, sort_keys=True))


class OrpheusPlugin(BasePlugin):
    """Fine-tune Orpheus TTS on raw audio + text with `type: axolotl_orpheus.tts` datasets."""

    def get_input_args(self) -> str:
        return "axolotl_orpheus.args.OrpheusArgs"

    def register(self, cfg: dict) -> None:
        """Rewrite the raw config's Orpheus dataset entries before axolotl validates and loads them."""
        fingerprint = settings_fingerprint(OrpheusArgs.from_cfg(cfg))
        for key in ("datasets", "test_datasets"):
            for entry in cfg.get(key) or []:
                if str(entry.get("type", "")).startswith(STRATEGY_TYPE):
                    point_folder_at_metadata(entry)
                    # axolotl's prepared-dataset hash ignores plugin keys: without this, `axolotl train`
                    # would reuse rows prepared under other orpheus_* settings.
                    entry["message_property_mappings"] = {
                        **(entry.get("message_property_mappings") or {}),
                        FINGERPRINT_KEY: fingerprint,
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
        from axolotl.utils.data.shared import generate_dataset_hash_from_config, get_prepared_dataset_path

        COLLECTED.clear()
        dataset_meta = load_datasets(cfg=cfg)
        if COLLECTED:
            dataset_hash = generate_dataset_hash_from_config(cfg, cfg.datasets, COLLECTED[0].tokenizer)
            prepared = get_prepared_dataset_path(cfg, dataset_hash)
            pin_fingerprint(prepared)
            path = write_report(COLLECTED, prepared)
            LOG.info(f"All Orpheus datasets:\n{summary_text(summarize(COLLECTED))}\nReport: {path}")
        return dataset_meta

    def add_callbacks_post_trainer(self, cfg, trainer) -> list:
        """Speak orpheus_sample_prompts at each evaluation and at the end of training."""
        settings = OrpheusArgs.from_cfg(cfg)
        if not settings.orpheus_sample_prompts:
            return []
        if cfg.fsdp or cfg.fsdp_config or cfg.deepspeed:
            # Sharded weights need every rank to take part in a forward pass; generating on one would hang.
            LOG.warning(
                "orpheus_sample_prompts: no samples under FSDP or DeepSpeed; speak after training with "
                "`axolotl-orpheus speak --model OUTPUT_DIR`"
            )
            return []
        from axolotl_orpheus.samples import SpeechSamplesCallback

        return [
            SpeechSamplesCallback(
                settings.orpheus_sample_prompts,
                trainer.processing_class,
                settings.orpheus_snac_model,
                settings.orpheus_sample_max_new_tokens,
                trainer.callback_handler.callbacks,
            )
        ]
