"""Shared fixtures: offline stand-ins built once per test session, and small real-speech datasets."""

from __future__ import annotations

import os
import sys
import tempfile

# Before anything imports huggingface_hub or axolotl: no hub, no telemetry.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["AXOLOTL_DO_NOT_TRACK"] = "1"
# axolotl's config loading (load_cfg, in-process in many tests) would wrap sys.stdout and sys.stderr in a tee to its
# debug log for the rest of the process, around whichever test's captured streams were current: not in tests.
os.environ["AXOLOTL_TEE_STDOUT"] = "0"
# datasets' cache, and with it the default codes cache, in a folder of this session's, never the user's.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="orpheus-tests-datasets-")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile  # noqa: E402

from axolotl_orpheus.audio import SAMPLE_RATE, load_clip  # noqa: E402
from helpers import CLIPS_DIR, DEVICE, SnacLoads, run_axolotl, write_audio_parquet  # noqa: E402

SNAC_LOADS = SnacLoads()  # the process's SNAC models, by folder


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
def cache_home(tmp_path_factory) -> Path:
    """An XDG_CACHE_HOME for the session, where the CLI finds the stand-ins the fixtures built: one for all of
    pytest-xdist's workers (the folder above each worker's own), so that they build the stand-ins once."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "cache"
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
