"""Local data entries rewritten into the form axolotl loads without torchcodec, csv cells kept as written."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import config as datasets_config

from axolotl_orpheus.args import SOURCE_KEY
from axolotl_orpheus.errors import UserError

LOG = logging.getLogger(__name__)

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
        Path(datasets_config.HF_DATASETS_CACHE)
        / CSV_COPIES
        / hashlib.sha256(CSV_FORMAT + data).hexdigest()[:32]
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
                f'{len(header)} columns. To fix: quote a cell that holds a comma, e.g. "Hello, there."'
            )
        cells += [""] * (len(header) - len(cells))  # a short row's missing cells are empty, as pandas reads them
        for column, cell in zip(columns, cells):
            column.append(cell or None)
    if not columns[0]:
        raise UserError(
            f"Orpheus dataset {csv_file} has a header but no rows. To fix: add a row per clip, e.g. clip_01.wav,Hello"
        )
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
