"""OrpheusPlugin: makes raw audio datasets loadable and ties prepared rows to the orpheus_* settings."""

from __future__ import annotations

import hashlib
from pathlib import Path

from axolotl.integrations.base import BasePlugin
from axolotl.utils.logging import get_logger

from axolotl_orpheus import __version__
from axolotl_orpheus.args import OrpheusArgs

LOG = get_logger(__name__)

STRATEGY_TYPE = "axolotl_orpheus.tts"
# The key under each Orpheus dataset entry's `message_property_mappings` that holds the settings'
# fingerprint. That field survives validation and is part of axolotl's prepared-dataset hash.
FINGERPRINT_KEY = "orpheus_settings"
# An audiofolder's metadata file and the axolotl `ds_type` that reads it.
METADATA_FILES = {"metadata.csv": "csv", "metadata.jsonl": "json"}


def settings_fingerprint(settings: OrpheusArgs) -> str:
    """A digest of every orpheus_* setting and this package's version, which together decide the rows."""
    return hashlib.md5(f"{__version__}|{settings.model_dump_json()}".encode()).hexdigest()


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
