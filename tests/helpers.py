"""What several test modules share: the strategy run in-process the way axolotl calls it (load, then wrap_dataset),
axolotl's own commands in this process, SNAC loaded once per process, datasets and configs laid out as users do,
the reference recipe's rows."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import random
import shutil
import signal
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import yaml
from axolotl.utils.dict import DictDefault

from axolotl_orpheus.args import FINGERPRINT_KEY
from axolotl_orpheus.cli.demo import BUNDLED_CLIPS, demo_config

if TYPE_CHECKING:  # torch and datasets take seconds to import: conftest imports this module, tests need not
    import torch
    from datasets import Dataset

    from axolotl_orpheus.prepare.report import DatasetReport

CLIPS_DIR = Path(str(BUNDLED_CLIPS))
# Secrets in a config (conftest's scored_training): sharing must leave them out.
SECRETS = {"wandb_api_key": "wandb-secret-5f0c2a9e", "hf_token": "hf_SecretTokenForTheTestsOnly1234"}
# Where snac_model runs: ORPHEUS_TEST_DEVICE=cuda runs the codec's exactness tests on a GPU
# (`pytest tests/test_codec.py`), against stock SNAC on the CPU.
DEVICE = os.environ.get("ORPHEUS_TEST_DEVICE", "cpu")


def write_audio_parquet(path: Path, folder: Path, rows: list[dict[str, str]]) -> Path:
    """The hub layout: an `audio` struct<bytes, path> column with the Audio feature in the metadata.

    Written with pyarrow, since datasets' own Audio encoding needs torchcodec.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Audio, Features, Value

    features = Features({"audio": Audio(), "text": Value("string"), "speaker": Value("string")})
    table = pa.table(
        {
            "audio": [{"bytes": (folder / r["file_name"]).read_bytes(), "path": r["file_name"]} for r in rows],
            "text": [r["text"] for r in rows],
            "speaker": [r["speaker"] for r in rows],
        },
        schema=features.arrow_schema,
    )
    pq.write_table(table, path)
    return path


def voice_folder(
    folder: Path,
    clips: Path,
    rows: list[tuple[str, ...]],
    header=("file_name", "text", "speaker"),
    metadata: str = "metadata.csv",
) -> Path:
    """A folder with a metadata csv of `rows` and the clips they name (those `clips` has)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in {row[0] for row in rows if (clips / row[0]).is_file()}:
        shutil.copy(clips / name, folder / name)
    with open(folder / metadata, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *rows])
    return folder


def config_file(tmp_path: Path, standins, **changes) -> Path:
    """tmp_path/config.yml: the CPU demo's config with the stand-ins, one step, and `changes`."""
    config = demo_config(tmp_path, str(standins["tokenizer"]), str(standins["snac"]), standins["model"], 1)
    config.update(changes)
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def validated(tmp_path: Path, standins, **changes) -> DictDefault:
    """That config as axolotl's own config loading validates it, with the plugin (helpers.config_file)."""
    from axolotl.cli.config import load_cfg

    return load_cfg(str(config_file(tmp_path, standins, **changes)))


def assert_same_codes(got, expected):
    assert len(got) == len(expected)
    for clip_got, clip_expected in zip(got, expected):
        for level_got, level_expected in zip(clip_got, clip_expected):
            np.testing.assert_array_equal(level_got, level_expected)


def reference_rows(
    reference_codes: list[list[int]], tokenizer, metadata: list[dict], speaker: bool | str = True, dedupe=True
) -> list[list[int]]:
    """The reference recipe's rows of the bundled clips from their codes (the `reference_codes` fixture), with each
    row's speaker, none (False) or one voice for all (a str)."""
    from reference_recipe import create_input_ids, remove_duplicate_frames

    rows = []
    for codes, row in zip(reference_codes, metadata):
        voice = speaker if isinstance(speaker, str) else row["speaker"] if speaker else None
        speech = remove_duplicate_frames(codes) if dedupe else codes
        rows.append(create_input_ids(tokenizer, row["text"], voice, speech))
    return rows


def load_raw(path: Path) -> Dataset:
    """What axolotl loads for a local metadata.csv / parquet file (after the plugin's folder rewrite)."""
    from datasets import load_dataset

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


def judge_options(standins) -> list[str]:
    """`evaluate`'s options for the session's stand-in judges (SNAC, Whisper, the speaker model), on CPU."""
    asr, speaker, snac = (str(standins[name]) for name in ("asr", "speaker", "snac"))
    return ["--asr-model", asr, "--speaker-model", speaker, "--snac-model", snac, "--device", "cpu"]


def usage_error(capsys, argv: list[str]) -> str:
    """What `axolotl-orpheus ARGV` says when it refuses a user's mistake: exit code 2 and one line, the last on
    stderr (progress bars may stand before it)."""
    from axolotl_orpheus.cli.main import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    last = err.rstrip("\n").rsplit("\n", 1)[-1].rsplit("\r", 1)[-1]
    assert last.startswith(f"axolotl-orpheus {argv[0]}: "), err
    return last


# axolotl's own commands in this process.


class _Lines(logging.Handler):
    """The log lines of a run, whichever logger they went to (axolotl's does not propagate to the root)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("[%(levelname)s] [%(name)s] %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def as_a_fresh_process():
    """What a run of axolotl in this process leaves behind, put back after it, so that no result depends on which
    test ran before: the environment (axolotl sets AXOLOTL_IS_PREPROCESS, ACCELERATE_*, WORLD_SIZE...), the plugin
    registry (a fresh OrpheusPlugin per run), accelerate's shared state, the debug log that axolotl's config
    loading opens, torch's threads, default dtype and random states, Python's and numpy's random
    states, warning filters and the SIGINT handler that training sets."""
    import torch
    from accelerate.state import AcceleratorState, GradientState
    from axolotl.integrations.base import PluginManager
    from axolotl.utils import distributed, tee

    def forget() -> None:
        manager = PluginManager.get_instance()  # one per process: axolotl's modules hold it in globals
        manager.plugins.clear()
        manager.cfg = None
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        distributed.distributed_state = None  # axolotl's own handle on accelerate's state, made again when asked
        tee.close_debug_log()  # each run writes its own output_dir/debug.log (conftest turns its stdout tee off)

    environ = dict(os.environ)
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    sigint = signal.getsignal(signal.SIGINT)
    forget()
    try:
        with warnings.catch_warnings():
            yield
    finally:
        forget()
        os.environ.clear()
        os.environ.update(environ)
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        signal.signal(signal.SIGINT, sigint)


def run_axolotl(monkeypatch, command: str, config: Path, cwd: Path) -> str:
    """`axolotl COMMAND CONFIG` from `cwd` in this process, through axolotl's own command line: its click group,
    then `axolotl.cli.preprocess.do_cli`, or for train (`--launcher python`) `axolotl.cli.train.do_cli`, which
    `accelerate launch` would run in a process of its own, with the threads it gives that process on a machine
    without a GPU (OMP_NUM_THREADS, 1 unless set). Returns what the run printed on stdout and logged.

    No process start-up (about 10 s each, three for a train): tests/test_demo.py runs the real `axolotl preprocess`
    and `axolotl train` processes, once each."""
    import torch
    from axolotl.cli.main import cli

    args = [command, str(config), *(["--launcher", "python"] if command == "train" else [])]
    monkeypatch.chdir(cwd)  # relative paths in a config are relative to where axolotl runs
    lines, stdout = _Lines(), io.StringIO()
    loggers = [logging.getLogger("axolotl"), logging.getLogger()]
    for logger in loggers:
        logger.addHandler(lines)
    try:
        with as_a_fresh_process(), monkeypatch.context() as patched, contextlib.redirect_stdout(stdout):
            patched.setattr(sys, "argv", ["axolotl", *args])  # do_cli parses its own arguments from sys.argv
            if command == "train":
                threads = os.environ.setdefault("OMP_NUM_THREADS", "1")
                torch.set_num_threads(int(threads))
            cli.main(args, prog_name="axolotl", standalone_mode=False)
    finally:
        for logger in loggers:
            logger.removeHandler(lines)
        sys.stdout.write(stdout.getvalue())  # still shown with a failing test's output
    return stdout.getvalue() + "\n".join(lines.lines)


# SNAC loaded once per process.


class SnacLoads:
    """codec.load_snac, loading each SNAC folder once per process: its exactness checks of the C kernels take
    seconds, and most tests load the same stand-in. Keyed by the folder, its files' sizes and times, the device and
    torch's threads (the checks' results depend on them); a load that is not of a whole folder, with the C kernels off
    or compiled, is done afresh. A repeated load logs what the first logged (which SNAC path runs), as a load would."""

    def __init__(self) -> None:
        self.loaded: dict[tuple, tuple[torch.nn.Module, list]] = {}

    def __call__(self, name_or_path: str, device=None, compile_encoder: bool = False, cpu_kernels: bool = True):
        import torch

        from axolotl_orpheus.codec import loading
        from axolotl_orpheus.codec.fast import kernel_forms

        files = [Path(name_or_path) / loading.CONFIG_FILE, Path(name_or_path) / loading.WEIGHTS_FILE]
        if compile_encoder or not cpu_kernels or not all(file.is_file() for file in files):
            return loading.load_snac(name_or_path, device, compile_encoder, cpu_kernels)
        stats = [(file.stat().st_mtime_ns, file.stat().st_size) for file in files]
        key = (str(Path(name_or_path).resolve()), str(device), torch.get_num_threads(), *stats)
        if key not in self.loaded:
            calls: list = []
            logs = [(loading, _Recording(loading.LOG, calls)), (kernel_forms, _Recording(kernel_forms.LOG, calls))]
            for module, recording in logs:
                module.LOG = recording
            try:
                model = loading.load_snac(name_or_path, device, compile_encoder, cpu_kernels)
            finally:
                for module, recording in logs:
                    module.LOG = recording.log
            self.loaded[key] = model, calls
            return model
        model, calls = self.loaded[key]
        for log, method, args, kwargs in calls:
            getattr(log, method)(*args, **kwargs)
        return model


class _Recording:
    """A logger that records each call (its level's method and arguments) and passes it on."""

    def __init__(self, log: logging.Logger, calls: list) -> None:
        self.log, self.calls = log, calls

    def __getattr__(self, method: str):
        def call(*args, **kwargs):
            self.calls.append((self.log, method, args, kwargs))
            return getattr(self.log, method)(*args, **kwargs)

        return call
