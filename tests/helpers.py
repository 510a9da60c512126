"""Running the strategy in-process, the way axolotl calls it (load, then wrap_dataset)."""

from __future__ import annotations

from pathlib import Path

import pytest
from axolotl.utils.dict import DictDefault
from datasets import Dataset, load_dataset

from axolotl_orpheus.args import FINGERPRINT_KEY
from axolotl_orpheus.prepare.report import DatasetReport


def load_raw(path: Path) -> Dataset:
    """What axolotl loads for a local metadata.csv / parquet file (after the plugin's folder rewrite)."""
    ds_type = {".csv": "csv", ".parquet": "parquet", ".jsonl": "json"}[path.suffix]
    return load_dataset(ds_type, data_files=str(path), split="train")


def prepare_report(
    tokenizer, path: Path, dataset: Dataset | None = None, mappings: dict | None = None, **settings
) -> tuple[Dataset, DatasetReport]:
    """Orpheus rows and report for the dataset at `path` (or `dataset`, read from there).

    `settings` are top-level config keys (orpheus_*, sequence_len); `mappings` the entry's per-dataset keys.
    Codes are encoded afresh unless `orpheus_codes_cache` is given: a test of encoding must not read codes
    an earlier test cached.
    """
    settings.setdefault("orpheus_codes_cache", False)
    from axolotl_orpheus import tts

    ds_cfg = {
        "path": str(path),
        "type": "axolotl_orpheus.tts",
        "message_property_mappings": {FINGERPRINT_KEY: "test", **(mappings or {})},
    }
    strategy = tts.load(tokenizer, DictDefault(settings), ds_cfg)
    return strategy.wrap_dataset(load_raw(path) if dataset is None else dataset), strategy.report


def prepare(tokenizer, path: Path, dataset: Dataset | None = None, **settings) -> Dataset:
    return prepare_report(tokenizer, path, dataset, **settings)[0]


def usage_error(capsys, argv: list[str]) -> str:
    """What `axolotl-orpheus ARGV` says on stderr when it refuses a user's mistake: one line, exit code 2."""
    from axolotl_orpheus.cli.main import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert err.startswith(f"axolotl-orpheus {argv[0]}: ") and err.count("\n") == 1, err
    return err
