"""Shared fixtures: offline stand-ins built once per test session, and small real-speech datasets."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass

# Before anything imports huggingface_hub or axolotl: no hub, no telemetry.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["AXOLOTL_DO_NOT_TRACK"] = "1"
# axolotl's config loading (load_cfg, in-process in many tests) would wrap sys.stdout and sys.stderr in a tee to its
# debug log for the rest of the process, around whichever test's captured streams were current: not in tests.
os.environ["AXOLOTL_TEE_STDOUT"] = "0"
# datasets' cache, and with it the default codes cache, in a folder of this session's, never the user's.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="orpheus-tests-datasets-")
# pytest-xdist's workers share the cores: each takes its share of threads (torch reads OMP_NUM_THREADS when imported;
# the processes a test starts inherit it), or every worker's threads would wait on the others' for a core.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile  # noqa: E402

from axolotl_orpheus.audio import SAMPLE_RATE, load_clip  # noqa: E402
from helpers import CLIPS_DIR, DEVICE, SECRETS, SnacLoads, run_axolotl, write_audio_parquet  # noqa: E402

SNAC_LOADS = SnacLoads()  # the process's SNAC models, by folder
# The modules that take longest, longest first: pytest-xdist hands whole modules to its workers in collection order
# (addopts: --dist loadfile --no-loadscope-reorder), so that none of them is left to run alone at the end.
LONGEST_FIRST = ["test_e2e", "test_cluster", "test_share", "test_codec", "test_demo", "test_quality", "test_strategy"]


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.stem
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each module's tests keep their order, the other modules theirs


@pytest.fixture(autouse=True)
def snac_loaded_once(request, monkeypatch):
    """codec.load_snac loads each SNAC folder once per process (helpers.SnacLoads); a test marked
    fresh_snac_loads loads afresh each time, as the package does. (Where torch is not imported yet, as for a module
    without SNAC run alone, nothing is patched: importing it would cost seconds.)"""
    if request.node.get_closest_marker("fresh_snac_loads") is None and "torch" in sys.modules:
        from axolotl_orpheus import codec

        monkeypatch.setattr(codec, "load_snac", SNAC_LOADS)


@pytest.fixture
def axolotl(monkeypatch):
    """`axolotl(command, config, cwd)`: axolotl's own `preprocess` or `train` in this process, as a fresh process
    would run it (helpers.run_axolotl); returns what it printed and logged."""
    return lambda command, config, cwd: run_axolotl(monkeypatch, command, config, cwd)


@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory) -> Path:
    """The session's folder for what pytest-xdist's workers share (the folder above each worker's own): what goes in
    it is made once, under a lock, by the first worker that needs it."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def cache_home(shared_tmp) -> Path:
    """An XDG_CACHE_HOME for the session, where the CLI finds the stand-ins the fixtures built."""
    folder = shared_tmp / "cache"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def standins(cache_home) -> dict[str, Path]:
    from filelock import FileLock

    from axolotl_orpheus.cli.standins import build_standins

    with FileLock(cache_home / "standins.lock"):  # one worker builds, the others wait and read
        return build_standins(cache_home / "axolotl_orpheus" / "standins")


@pytest.fixture(scope="session")
def tokenizer(standins):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(standins["tokenizer"])


@pytest.fixture(scope="session")
def snac_model(standins):
    from axolotl_orpheus.codec import load_snac

    return load_snac(str(standins["snac"]), DEVICE)


@pytest.fixture(scope="session")
def stock_snac(standins):
    """SNAC exactly as its own package builds it (as the reference recipe's from_pretrained would), for the
    oracle: our load_snac swaps in an in-place Snake and residual sum that must not change any value."""
    from axolotl_orpheus import codec

    return codec.load_stock_snac(str(standins["snac"]))


@pytest.fixture(scope="session")
def metadata() -> list[dict[str, str]]:
    """The bundled clips' rows: file_name, text, speaker (espeak-ng speech, see data/clips/SOURCES.md)."""
    import csv

    with open(CLIPS_DIR / "metadata.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="session")
def audiofolder_24k(tmp_path_factory, metadata) -> Path:
    """The bundled clips resampled to 24 kHz, as an audiofolder: 16-bit wavs + metadata.csv.

    At 24 kHz no resampling happens, so rows must equal the reference recipe's token for token.
    """
    folder = tmp_path_factory.mktemp("audiofolder_24k")
    for row in metadata:
        soundfile.write(folder / row["file_name"], load_clip(str(CLIPS_DIR / row["file_name"])), SAMPLE_RATE, "PCM_16")
    (folder / "metadata.csv").write_text((CLIPS_DIR / "metadata.csv").read_text())
    return folder


@pytest.fixture(scope="session")
def parquet_24k(tmp_path_factory, audiofolder_24k, metadata) -> Path:
    """The same 24 kHz speech as parquet with embedded audio bytes (no files beside it)."""
    return write_audio_parquet(tmp_path_factory.mktemp("parquet_24k") / "train.parquet", audiofolder_24k, metadata)


@pytest.fixture(scope="session")
def speech_24k(audiofolder_24k, metadata) -> list[np.ndarray]:
    return [soundfile.read(audiofolder_24k / r["file_name"], dtype="float32")[0] for r in metadata]


@pytest.fixture(scope="session")
def reference_codes(stock_snac, speech_24k) -> list[list[int]]:
    """The reference recipe's codes of each bundled clip (stock SNAC, one clip at a time), computed once: the
    oracle that rows are compared with (helpers.reference_rows)."""
    from reference_recipe import tokenise_audio

    return [tokenise_audio(stock_snac, clip) for clip in speech_24k]


@dataclass
class ScoredTraining:
    config: Path  # its finetune.yml, holding helpers.SECRETS as a user's config may
    output_dir: Path
    prepared: Path  # the rows axolotl's preprocess wrote
    log: str  # what the train printed and logged

    @property
    def datasets_cache(self) -> Path:
        """The datasets cache its runs used, whichever worker trained it: a local csv's prepared rows are filed
        under a hash that names the csv's copy there, so a run that reuses those rows must use it too."""
        return self.config.parent / "datasets-cache"


@pytest.fixture(scope="session")
def scored_training(shared_tmp, standins) -> ScoredTraining:
    """A full fine-tune of the tiny stand-in Llama through axolotl's own `preprocess` and `train` (in this process),
    scored by the stand-in Whisper and speaker model at each evaluation (steps 0, 2 and 4; saved at 2 and 4), the
    best checkpoint by eval_orpheus_cer kept, though the config says greater_is_better: true. Trained once for all
    workers, for the tests of training (test_e2e) and of sharing (test_share), which only read it: training is the
    slowest thing the suite does."""
    import shutil

    from filelock import FileLock

    from axolotl_orpheus.cli.demo import newest_prepared_dataset

    root = shared_tmp / "scored-training"
    with FileLock(shared_tmp / "scored-training.lock"):  # one worker trains, the others wait and read
        if not (root / "train.log").is_file():
            shutil.rmtree(root, ignore_errors=True)  # what a failed try left
            root.mkdir()
            (root / "train.log").write_text(_train_scored(root, standins))
    return ScoredTraining(
        root / "finetune.yml",
        root / "model",
        newest_prepared_dataset(root / "prepared"),
        (root / "train.log").read_text(),
    )


def _train_scored(root: Path, standins: dict[str, Path]) -> str:
    """scored_training's runs in `root`: what the train printed and logged."""
    import datasets
    import yaml

    from axolotl_orpheus.cli.demo import demo_config

    config = demo_config(root, str(standins["tokenizer"]), str(standins["snac"]), standins["model"], max_steps=4)
    config.update(
        val_set_size=0.34,  # two of the six rows
        eval_steps=2,
        save_steps=2,
        orpheus_eval_samples=2,
        orpheus_sample_max_new_tokens=35,
        orpheus_asr_model=str(standins["asr"]),
        orpheus_speaker_model=str(standins["speaker"]),
        orpheus_eval_language="en",
        metric_for_best_model="eval_orpheus_cer",
        greater_is_better=True,
        load_best_model_at_end=True,
        **SECRETS,
    )
    path = root / "finetune.yml"
    path.write_text(yaml.safe_dump(config))
    assert Path(config["output_dir"]) == root / "model"
    with pytest.MonkeyPatch.context() as monkeypatch:  # the `axolotl` fixture's runs, for the session
        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(root / "datasets-cache"))
        run_axolotl(monkeypatch, "preprocess", path, root)
        return run_axolotl(monkeypatch, "train", path, root)


@pytest.fixture
def encoded(monkeypatch) -> list[int]:
    """The length in samples of every clip SNAC really encodes (codec.encode still runs), in order."""
    from axolotl_orpheus import codec

    lengths: list[int] = []
    real_encode = codec.encode

    def recording(model, clips, *args, **kwargs):
        lengths.extend(len(clip) for clip in clips)
        return real_encode(model, clips, *args, **kwargs)

    monkeypatch.setattr(codec, "encode", recording)
    return lengths
