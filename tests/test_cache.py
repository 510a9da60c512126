"""The codes cache: a re-run after a text or label option reads codes instead of encoding; a change of
audio or SNAC weights encodes again; several devices fill it as one does."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile
import torch

from axolotl_orpheus import codec, layout
from axolotl_orpheus.prepare import cache
from axolotl_orpheus.prepare.report import summarize
from helpers import prepare_report, usage_error

KEY = "ab" * 20
CODES = (np.array([0, 4095]), np.array([1, 2, 3, 4]), np.arange(8))  # two frames


@pytest.fixture
def voice(tmp_path, audiofolder_24k):
    folder = tmp_path / "voice"
    shutil.copytree(audiofolder_24k, folder)
    return folder


def entries(root):
    return sorted(root.rglob("*.codes"))


def test_an_option_change_reads_cached_codes(tmp_path, voice, tokenizer, standins, encoded, metadata):
    store = tmp_path / "codes"
    settings = dict(orpheus_snac_model=str(standins["snac"]), orpheus_codes_cache=str(store))
    cold, cold_report = prepare_report(tokenizer, voice / "metadata.csv", **settings)
    assert len(encoded) == len(metadata) and len(entries(store)) == len(metadata)

    encoded.clear()
    for changes in (
        {},
        {"orpheus_train_on_text": False},
        {"orpheus_speaker_column": ""},
        {"orpheus_remove_duplicate_frames": False},
    ):
        warm, warm_report = prepare_report(tokenizer, voice / "metadata.csv", **settings, **changes)
        fresh = prepare_report(tokenizer, voice / "metadata.csv", orpheus_snac_model=str(standins["snac"]), **changes)[
            0
        ]
        assert warm["input_ids"] == fresh["input_ids"] and warm["labels"] == fresh["labels"], changes
    assert len(encoded) == 4 * len(metadata)  # the fresh runs only: every warm run read the cache
    assert warm_report.seconds == cold_report.seconds


def test_the_same_clip_twice_is_encoded_once(tmp_path, voice, tokenizer, standins, encoded, metadata):
    """A clip that several rows hold (the same file twice, or a copy under another name) is encoded once, and
    every row that holds it gets its codes."""
    shutil.copy(voice / metadata[0]["file_name"], voice / "copy.wav")
    lines = (voice / "metadata.csv").read_text().splitlines()
    first = metadata[0]["file_name"]
    lines += [f"{first},Again.,ada", "copy.wav,A copy.,ada"]
    (voice / "metadata.csv").write_text("\n".join(lines) + "\n")
    rows, report = prepare_report(tokenizer, voice / "metadata.csv", orpheus_snac_model=str(standins["snac"]))
    assert len(encoded) == len(metadata) and len(rows) == len(metadata) + 2
    speech = [layout.speech_frames(ids).tolist() for ids in rows["input_ids"]]
    assert speech[-2] == speech[-1] == speech[0]


def test_the_rows_fingerprint_follows_the_audio(tmp_path, voice, tokenizer, standins, metadata):
    """The prepared rows' fingerprint, which names datasets' cache files of every later step, covers each clip's
    content: a changed clip under an unchanged table gives another fingerprint; an unchanged one the same."""
    settings = dict(orpheus_snac_model=str(standins["snac"]), orpheus_codes_cache=str(tmp_path / "codes"))
    before = prepare_report(tokenizer, voice / "metadata.csv", **settings)[0]._fingerprint
    assert prepare_report(tokenizer, voice / "metadata.csv", **settings)[0]._fingerprint == before
    clip = voice / metadata[0]["file_name"]
    samples, rate = soundfile.read(clip, dtype="float32")
    soundfile.write(clip, samples * 0.5, rate, "PCM_16")
    assert prepare_report(tokenizer, voice / "metadata.csv", **settings)[0]._fingerprint != before


def test_changed_audio_or_snac_weights_miss(tmp_path, voice, tokenizer, standins, encoded, metadata):
    store = tmp_path / "codes"
    prepare_report(
        tokenizer, voice / "metadata.csv", orpheus_snac_model=str(standins["snac"]), orpheus_codes_cache=str(store)
    )
    encoded.clear()

    # One clip gets quieter: only that clip is encoded again, and its row is the fresh one.
    first = voice / metadata[0]["file_name"]
    samples, rate = soundfile.read(first, dtype="float32")
    soundfile.write(first, samples * 0.5, rate, "PCM_16")
    warm = prepare_report(
        tokenizer, voice / "metadata.csv", orpheus_snac_model=str(standins["snac"]), orpheus_codes_cache=str(store)
    )[0]
    assert len(encoded) == 1
    fresh = prepare_report(tokenizer, voice / "metadata.csv", orpheus_snac_model=str(standins["snac"]))[0]
    assert warm["input_ids"] == fresh["input_ids"]

    # Other weights under the same config: a namespace of its own, every clip encoded.
    other = tmp_path / "snac_other"
    shutil.copytree(standins["snac"], other)
    weights = torch.load(other / "pytorch_model.bin", weights_only=True)
    name = next(key for key in weights if key.startswith("encoder.") and weights[key].is_floating_point())
    weights[name] = weights[name] * 1.01
    torch.save(weights, other / "pytorch_model.bin")
    encoded.clear()
    prepare_report(tokenizer, voice / "metadata.csv", orpheus_snac_model=str(other), orpheus_codes_cache=str(store))
    assert len(encoded) == len(metadata)
    assert len([p for p in store.iterdir() if p.is_dir()]) == 2


def test_the_pipeline_and_encoder_are_part_of_the_namespace(tmp_path, monkeypatch):
    """A new decoder or resampler version, or the compiled encoder (whose codes differ slightly), must not
    read codes made the other way."""
    before = cache.CodesCache(tmp_path, "digest").folder
    assert cache.CodesCache(tmp_path, "digest", compiled=True).folder != before
    assert cache.CodesCache(tmp_path, "other digest").folder != before
    monkeypatch.setattr(cache, "PIPELINE", cache.PIPELINE + "; soxr 9.9")
    assert cache.CodesCache(tmp_path, "digest").folder != before


def test_a_broken_entry_is_encoded_again(tmp_path, voice, tokenizer, standins, encoded, metadata):
    store = tmp_path / "codes"
    settings = dict(orpheus_snac_model=str(standins["snac"]), orpheus_codes_cache=str(store))
    cold, cold_report = prepare_report(tokenizer, voice / "metadata.csv", **settings)
    assert cold_report.codes_repaired == 0
    broken = entries(store)[0]
    broken.write_bytes(b"cut short")
    encoded.clear()
    warm, warm_report = prepare_report(tokenizer, voice / "metadata.csv", **settings)
    assert warm["input_ids"] == cold["input_ids"]
    assert len(encoded) == 1
    # Found damaged while checking rows, read again (rewritten) while framing: counted once, and reported.
    assert warm_report.codes_repaired == 1 and summarize([warm_report])["codes_cache_entries_repaired"] == 1
    reader = cache.CodesCache(store, codec.weights_digest(str(standins["snac"])))
    assert reader.get(broken.stem) is not None and reader.damaged == 0  # whole again on disk


@pytest.mark.parametrize("warnings", [(), ("clipping",), ("silent_audio", "clipping")])
def test_an_entry_round_trips(tmp_path, warnings):
    store = cache.CodesCache(tmp_path, "digest")
    store.put(KEY, cache.Entry(CODES, 1.5, warnings))
    got = store.get(KEY)
    assert [level.tolist() for level in got.codes] == [level.tolist() for level in CODES]
    assert got.codes[0].dtype == np.int64 and (got.seconds, got.warnings) == (1.5, warnings)
    assert store.get("cd" * 20) is None and store.damaged == 0  # a missing entry is not a damaged one
    assert not list(store.folder.rglob("*.tmp"))


def out_of_range(data: bytes) -> bytes:
    """The last code made 4096, with the checksum made right: only the range check can tell."""
    body = data[cache.HEADER.size :]
    return cache.seal(body[:-2] + (4096).to_bytes(2, "little"))


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-14],  # one frame (7 int16 codes) short
        lambda data: data[:-2],
        lambda data: bytes(len(data)),  # what a power loss can leave after a rename without fsync
        lambda data: data[:-1] + bytes([data[-1] ^ 1]),  # a flipped bit in a code, still in range
        lambda data: data[:20] + bytes([data[20] ^ 1]) + data[21:],  # a flipped bit in the header
        lambda data: data + bytes(14),  # a frame too many
        out_of_range,
    ],
    ids=[
        "a frame cut off",
        "two bytes cut off",
        "zeros",
        "a flipped code bit",
        "a flipped header bit",
        "a frame of zeros added",
        "a code out of range",
    ],
)
def test_a_damaged_entry_reads_as_missing_and_is_counted_once(tmp_path, damage):
    store = cache.CodesCache(tmp_path, "digest")
    store.put(KEY, cache.Entry(CODES, 1.5, ("clipping",)))
    store.path(KEY).write_bytes(damage(store.path(KEY).read_bytes()))
    assert store.get(KEY) is None and store.damaged == 1
    assert store.get(KEY) is None and store.damaged == 1  # the same entry, read again: counted once
    store.put(KEY, cache.Entry(CODES, 1.5, ("clipping",)))  # encoded again
    assert store.get(KEY).codes[2].tolist() == CODES[2].tolist() and store.damaged == 1


def test_an_entry_that_cannot_be_read_counts_as_damaged(tmp_path):
    store = cache.CodesCache(tmp_path, "digest")
    store.path(KEY).mkdir(parents=True)  # open() fails with an OSError other than "no such file"
    assert store.get(KEY) is None and store.damaged == 1


@pytest.mark.parametrize(
    "codes, problem",
    [
        ((np.array([0, 4096]), np.arange(4), np.arange(8)), "in 0..4095"),
        ((np.array([-1, 0]), np.arange(4), np.arange(8)), "in 0..4095"),
        ((np.array([0, 1]), np.arange(3), np.arange(8)), "n, 2n and 4n codes"),
        ((np.array([], int), np.array([], int), np.array([], int)), "n, 2n and 4n codes"),
    ],
)
def test_codes_that_are_not_snac_codes_are_not_cached(tmp_path, codes, problem):
    store = cache.CodesCache(tmp_path, "digest")
    with pytest.raises(ValueError, match=problem):
        store.put(KEY, cache.Entry(codes, 1.5, ()))
    assert not store.path(KEY).exists()


@pytest.fixture(params=[0o002, 0o022])
def umask(request):
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


def test_entries_and_folders_follow_the_umask(tmp_path, umask):
    """In a group-writable shared folder, another account of the group reads (and rewrites) the entries."""
    store = cache.CodesCache(tmp_path / "codes", "digest")
    store.put(KEY, cache.Entry(CODES, 1.5, ()))
    for path in (store.path(KEY), store.folder / cache.ABOUT_FILE):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    for folder in (tmp_path / "codes", store.folder, store.path(KEY).parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask, folder


def test_a_cache_folder_setting_becomes_an_absolute_folder(tmp_path, monkeypatch):
    """`orpheus_codes_cache: ~/codes` is the home folder's, not a folder named `~`; a relative one is
    the current folder's, and the log names it absolute."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    with cache.open_cache("~/codes", "digest", False, "snac") as store:
        assert store.root == tmp_path / "home" / "codes" and store.folder.is_dir()
    assert not (tmp_path / "work" / "~").exists()
    with cache.open_cache("codes", "digest", False, "snac") as store:
        assert store.root == tmp_path / "work" / "codes" and store.root.is_absolute()


def test_false_keeps_nothing_and_true_uses_the_datasets_cache(tmp_path, voice, tokenizer, standins, metadata):
    from datasets import config

    default = cache.default_root()
    assert default == config.HF_DATASETS_CACHE / "orpheus_codes"
    before = entries(default) if default.exists() else []
    prepare_report(
        tokenizer, voice / "metadata.csv", orpheus_snac_model=str(standins["snac"]), orpheus_codes_cache=False
    )
    assert (entries(default) if default.exists() else []) == before
    prepare_report(
        tokenizer, voice / "metadata.csv", orpheus_snac_model=str(standins["snac"]), orpheus_codes_cache=True
    )
    assert len(entries(default)) >= len(metadata)


def test_two_encoding_processes_give_the_rows_of_one(tmp_path, voice, tokenizer, standins, metadata):
    """orpheus_encode_devices: one SNAC replica per device in spawned processes (two CPU ones here, which
    split the cores). oneDNN's results depend on the thread count, so the one process gets as many."""
    settings = dict(orpheus_snac_model=str(standins["snac"]))
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // 2))
    try:
        one = prepare_report(tokenizer, voice / "metadata.csv", **settings)[0]
    finally:
        torch.set_num_threads(threads)
    two = prepare_report(
        tokenizer,
        voice / "metadata.csv",
        **settings,
        orpheus_encode_devices=["cpu", "cpu"],
        orpheus_codes_cache=str(tmp_path / "c"),
    )[0]
    assert two["input_ids"] == one["input_ids"]
    assert len(entries(tmp_path / "c")) == len(metadata)


def test_the_cache_command_lists_namespaces_and_deletes_what_went_unused(tmp_path, capsys):
    """`axolotl-orpheus cache` lists each namespace; --delete-unused-for deletes entries neither written nor
    read for that long (a read marks an entry used), left-over temporary files, then namespaces left empty."""
    from axolotl_orpheus.cli.main import main

    codes = cache.Entry((np.array([1]), np.array([1, 2]), np.arange(4)), 0.1, ())
    eager = cache.CodesCache(tmp_path, "digest", snac_name="snac-a")
    compiled = cache.CodesCache(tmp_path, "digest", compiled=True, snac_name="snac-a")
    for key in ("aa" * 20, "ab" * 20, "ba" * 20):
        eager.put(key, codes)
    compiled.put("cc" * 20, codes)
    left_over = eager.folder / "aa" / "cut-short.tmp"
    left_over.write_bytes(b"cut")
    long_ago = time.time() - 40 * cache.DAY
    for path in (
        eager.path("aa" * 20),
        eager.path("ab" * 20),
        left_over,
        compiled.path("cc" * 20),
        compiled.folder / "about.json",
    ):
        os.utime(path, (long_ago, long_ago))
    assert eager.get("ab" * 20) is not None  # read today: used
    assert eager.path("ab" * 20).stat().st_mtime > time.time() - 60

    main(["cache", str(tmp_path)])
    printed = capsys.readouterr().out
    assert f"codes cache {tmp_path}: 4 clips" in printed and "in 2 namespaces" in printed
    assert "snac-a (eager): 3 clips" in printed and "snac-a (compiled): 1 clip," in printed
    assert f"last used {time.strftime('%Y-%m-%d', time.localtime(long_ago))}" in printed  # the compiled one

    main(["cache", str(tmp_path), "--delete-unused-for", "30"])
    assert "deleted the codes of 2 clips unused for 30 days" in capsys.readouterr().out
    assert entries(tmp_path) == sorted([eager.path("ab" * 20), eager.path("ba" * 20)])
    assert not left_over.exists() and not compiled.folder.exists() and eager.folder.exists()
    compiled.put("cc" * 20, codes)  # a run that had the pruned namespace open still writes
    assert compiled.get("cc" * 20) is not None

    main(["cache", str(tmp_path / "nowhere")])
    assert f"no codes in {tmp_path / 'nowhere'}" in capsys.readouterr().out
    refused = usage_error(capsys, ["cache", str(tmp_path), "--delete-unused-for", "-1"])
    assert "--delete-unused-for takes a number of days, 0 or more" in refused
    assert len(entries(tmp_path)) == 3  # nothing deleted


def test_the_cache_command_imports_no_torch(tmp_path):
    """`axolotl-orpheus cache` lists and deletes files: it starts without torch (seconds to import), in a fresh
    process as the command runs."""
    cache.CodesCache(tmp_path, "digest", snac_name="snac-a").put(KEY, cache.Entry(CODES, 0.2, ()))
    script = (
        "import sys; from axolotl_orpheus.cli.main import main; main(['cache', sys.argv[1]]); "
        "print('torch imported' if 'torch' in sys.modules else 'no torch')"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True)
    assert "1 clip" in result.stdout and result.stdout.strip().endswith("no torch")


def test_a_namespace_a_run_has_open_is_not_deleted_as_unused(tmp_path, monkeypatch):
    """A run that opens a namespace last used long ago marks it in use (about.json's mtime), so that
    --delete-unused-for keeps it; and one deleted under a writer anyway (--delete-unused-for 0, between the writer's
    mkdir and its open) is made again, its entry written, not an error."""
    codes = cache.Entry((np.array([1]), np.array([1, 2]), np.arange(4)), 0.1, ())
    old = cache.CodesCache(tmp_path, "digest", snac_name="snac-a")
    long_ago = time.time() - 40 * cache.DAY
    os.utime(old.folder / cache.ABOUT_FILE, (long_ago, long_ago))

    running = cache.CodesCache(tmp_path, "digest", snac_name="snac-a")  # a preprocess starts on it
    assert cache.delete_unused(tmp_path, 30) == (0, 0) and running.folder.is_dir()

    real_open, pruned = os.open, []

    def pruned_first(path, *args, **kwargs):
        if str(path).endswith(".tmp") and not pruned:
            pruned.append(cache.delete_unused(tmp_path, 0))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", pruned_first)
    running.put(KEY, codes)
    monkeypatch.undo()
    assert pruned == [(0, 0)] and running.get(KEY) is not None
    assert json.loads((running.folder / cache.ABOUT_FILE).read_text())["snac_model"] == "snac-a"
