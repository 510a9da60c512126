"""OrpheusPlugin: makes raw audio datasets loadable and ties prepared rows to the orpheus_* settings."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from axolotl.integrations.base import BasePlugin
from axolotl.utils.logging import get_logger
from datasets import config as datasets_config

from axolotl_orpheus.args import FINGERPRINT_KEY, REPORTS_KEY, SOURCE_KEY, SPLIT_KEY, OrpheusArgs
from axolotl_orpheus.report import DatasetReport, full_report, report_voices, summary_text, write_report
from axolotl_orpheus.reproducible import files_digest

LOG = get_logger(__name__)

STRATEGY_TYPE = "axolotl_orpheus.tts"
# An audiofolder's metadata files, as datasets names them.
METADATA_FILES = ("metadata.csv", "metadata.jsonl")
# The axolotl `ds_type` that reads a data file, by its extension.
DS_TYPES = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
# Under HF_DATASETS_CACHE: the csv copies, one folder per content digest. The digest covers this format
# tag, so a change to the conversion makes new copies.
CSV_COPIES = "orpheus_csv"
CSV_FORMAT = b"orpheus-csv-cells-as-text-1\n"


def cells_as_text(csv_file: Path) -> Path:
    """A parquet copy of `csv_file` with every cell as written: its text, or null where the cell is empty.

    datasets reads csv with pandas, which takes NA, None, null, nan, N/A and the like for missing cells and
    turns a numeric column with a gap into floats (speaker 1 becomes 1.0); axolotl passes no csv options.
    The copy is named by the csv's content, so the user's folder is left alone and an edited csv is a new
    copy, which gives a new prepared-dataset hash instead of stale rows.
    """
    data = csv_file.read_bytes()
    copy = (
        Path(datasets_config.HF_DATASETS_CACHE) / CSV_COPIES / hashlib.sha256(CSV_FORMAT + data).hexdigest()[:32]
        / f"{csv_file.stem}.parquet"
    )
    if copy.is_file():
        return copy
    try:
        text = data.decode("utf-8-sig")  # utf-8, without the byte-order mark spreadsheets write
    except UnicodeDecodeError as exc:
        raise ValueError(f"Orpheus dataset {csv_file}: not UTF-8 text ({exc}). To fix: save it as UTF-8.") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        raise ValueError(
            f"Orpheus dataset {csv_file} is empty. To fix: start it with a header row, e.g. file_name,text"
        )
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ValueError(
            f"Orpheus dataset {csv_file}: the header names {repeated} more than once. To fix: name each column once."
        )
    columns: list[list[str | None]] = [[] for _ in header]
    for cells in reader:
        if not cells:  # a blank line
            continue
        if len(cells) > len(header):
            raise ValueError(
                f"Orpheus dataset {csv_file}, line {reader.line_num}: {len(cells)} cells under a header of "
                f"{len(header)} columns. To fix: quote a cell that holds a comma, e.g. \"Hello, there.\""
            )
        cells += [""] * (len(header) - len(cells))  # a short row's missing cells are empty, as pandas reads them
        for column, cell in zip(columns, cells):
            column.append(cell or None)
    table = pa.table({name: pa.array(values, pa.string()) for name, values in zip(header, columns)})
    copy.parent.mkdir(parents=True, exist_ok=True)
    partial = copy.with_name(f".{copy.name}.{os.getpid()}")
    pq.write_table(table, partial)
    os.replace(partial, copy)  # processes converting the same csv at once each put a whole file
    return copy


def rows_files(entry, default_split: str) -> tuple[list[Path], str | None] | None:
    """The local files an Orpheus entry's rows are in and the split to load them as, or None where axolotl
    loads the entry as it is (a hub id, a folder of parquet files).

    A folder is read through its metadata file: axolotl would load it with datasets' audiofolder builder,
    which needs torchcodec (it cannot load beside a CPU torch). In the hub's layout a folder holds one
    folder per split, each with its metadata file and audio.
    """
    split = entry.get("split")
    data_files = entry.get("data_files")
    if data_files:
        files = [Path(name) for name in ([data_files] if isinstance(data_files, str) else data_files)]
        # Data files that are not here are a hub repository's, which axolotl downloads.
        return (files, split) if all(file.is_file() for file in files) else None
    path = Path(str(entry.get("path") or ""))
    if path.is_file():
        return [path], split
    if not path.is_dir():
        return None
    for name in METADATA_FILES:
        if (path / name).is_file():
            return [path / name], split
    split_name, bracket, row_range = (split or default_split).partition("[")
    for name in METADATA_FILES:
        if (path / split_name / name).is_file():
            return [path / split_name / name], f"train{bracket}{row_range}"  # datasets calls a lone file's rows train
    splits = sorted({found.parent.name for name in METADATA_FILES for found in path.glob(f"*/{name}")})
    if splits:
        raise ValueError(
            f"Orpheus dataset {path}: no {split_name}/metadata.csv or {split_name}/metadata.jsonl. To fix: set "
            f"`split:` to one of its split folders {splits}."
        )
    return None


def point_at_rows(entry, default_split: str) -> None:
    """Rewrite a local Orpheus entry into the form axolotl loads without torchcodec, csv cells as text.

    Relative audio paths are resolved against the data file's folder: the entry's `path` becomes that
    folder, or the data file itself where axolotl reads it as it is.
    """
    found = rows_files(entry, default_split)
    if found is None:
        return
    files, split = found
    ds_type = entry.get("ds_type") or DS_TYPES.get(files[0].suffix.lower())
    if ds_type != "csv" and len(files) == 1:
        if files[0] != Path(str(entry.get("path") or "")):
            LOG.info(f"Orpheus: reading {entry.get('path')} through {files[0]}")
            entry.pop("data_files", None)
            entry.update(path=str(files[0]), ds_type=ds_type, split=split)
        return
    folders = sorted({str(file.parent.resolve()) for file in files})
    if len(folders) > 1:
        raise ValueError(
            f"Orpheus dataset {entry.get('path')}: data_files in several folders {folders}, while relative audio "
            "paths are resolved against the data file's folder. To fix: give each folder its own dataset entry."
        )
    source = ", ".join(map(str, files))
    if ds_type == "csv":
        LOG.info(f"Orpheus: reading {source} with every cell as text")
        copies, ds_type = [cells_as_text(file) for file in files], "parquet"
    else:
        copies = files
    # A folder with data_files: axolotl reads the files, and the strategy resolves audio against the folder.
    entry.update(
        path=str(files[0].parent), data_files=[str(copy) for copy in copies], ds_type=ds_type, split=split or "train"
    )
    entry["message_property_mappings"] = {**(entry.get("message_property_mappings") or {}), SOURCE_KEY: source}


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
    return {voice for entries in (cfg.datasets, cfg.test_datasets) if entries
            for voice in report_voices(prepared_folder(cfg, entries, tokenizer_name))}


def best_checkpoint_direction(cfg) -> bool | None:
    """greater_is_better for an Orpheus metric_for_best_model (None for another metric); refuses one that cannot
    choose a checkpoint."""
    from axolotl_orpheus.evaluation import METRICS

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

    def get_input_args(self) -> str:
        return "axolotl_orpheus.args.OrpheusArgs"

    def register(self, cfg: dict) -> None:
        """Rewrite the raw config's Orpheus dataset entries before axolotl validates and loads them."""
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
            report = full_report(reports, rows_saved=load_from_disk(str(prepared)).num_rows)
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
            LOG.warning(f"greater_is_better: {cfg.get('greater_is_better')} ignored: for {cfg.metric_for_best_model} "
                        f"{'higher' if greater_is_better else 'lower'} is better")
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
        from axolotl_orpheus.callbacks import SpeechSamplesCallback, SpeechScorer

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
