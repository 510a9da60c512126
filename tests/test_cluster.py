"""`orpheus_encode_cluster: ray` inside axolotl's real preprocess, on a local Ray cluster of 2 CPUs started once
for the module: the local path's rows, an encoding actor lost mid-run, a bad clip that stops the run. What needs no
running cluster is in tests/test_cluster_setup.py, which runs after this module has stopped it."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal

import numpy as np
import pytest
import soundfile
import yaml
from datasets import load_from_disk

from axolotl_orpheus.audio import SAMPLE_RATE, load_clip
from axolotl_orpheus.cli.demo import demo_config, newest_prepared_dataset
from axolotl_orpheus.prepare import cluster
from axolotl_orpheus.tts import RowError
from helpers import prepare, write_audio_parquet
from preprocess import make_corpus

SEQUENCE_LEN = 400  # holds every bundled clip (3.2 s at most), not two of them end to end


@pytest.fixture(scope="module")
def ray_cluster():
    """Ray's start-up takes seconds: once, and only for this module."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def with_nan_clip(folder, out):
    """A copy of the audiofolder `folder` with a row 1 whose header reads and whose decoding fails (a NaN after
    3.5 s of speech, longer than any bundled clip: the first chunk holds it)."""
    shutil.copytree(folder, out)
    speech = np.concatenate([load_clip(str(path)) for path in sorted(folder.glob("*.wav"))])[: int(3.5 * SAMPLE_RATE)]
    soundfile.write(out / "nan.wav", np.r_[speech, np.nan].astype(np.float32), SAMPLE_RATE, "FLOAT")
    lines = (out / "metadata.csv").read_text().splitlines()
    lines.insert(2, "nan.wav,A clip that ends in a NaN.,ada")
    (out / "metadata.csv").write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    """A path dataset of 17 distinct clips: 5 chunks on CPU."""
    return make_corpus(tmp_path_factory.mktemp("voices") / "corpus", minutes=0.7)


@pytest.fixture(scope="module")
def parquet_with_bad_rows(tmp_path_factory, audiofolder_24k):
    """The bundled speech as parquet carrying its bytes, with a bad clip and one longer than a row of SEQUENCE_LEN
    holds, which is probed before it is encoded."""
    work = tmp_path_factory.mktemp("parquet")
    folder = with_nan_clip(audiofolder_24k, work / "clips")
    first, second = (load_clip(str(folder / name)) for name in ("clip_01.wav", "clip_02.wav"))
    soundfile.write(folder / "long.wav", np.r_[first, second], SAMPLE_RATE, "FLOAT")
    (folder / "metadata.csv").write_text((folder / "metadata.csv").read_text() + "long.wav,Two clips in one.,ben\n")
    with open(folder / "metadata.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return write_audio_parquet(work / "train.parquet", folder, rows)


def local_rows(tokenizer, standins, path, **options) -> list:
    settings = {"orpheus_snac_model": str(standins["snac"]), "sequence_len": SEQUENCE_LEN, **options}
    return list(prepare(tokenizer, path, **settings)["input_ids"])


@pytest.fixture(scope="module")
def local(tokenizer, standins, voices, parquet_with_bad_rows) -> dict:
    """The local path's rows of each dataset."""
    return {path: local_rows(tokenizer, standins, path) for path in (voices / "metadata.csv", parquet_with_bad_rows)}


def preprocess(axolotl, tmp_path, standins, paths, **options) -> tuple[list, dict]:
    """axolotl's own preprocess in this process (the Ray driver; the `axolotl` fixture), encoding on the cluster into
    a codes cache of the test's own: the prepared rows and the report's total."""
    config = demo_config(tmp_path, str(standins["tokenizer"]), str(standins["snac"]), standins["model"], 1)
    config.update(
        datasets=[{"path": str(path), "type": "axolotl_orpheus.tts"} for path in paths],
        sequence_len=SEQUENCE_LEN,
        shuffle_merged_datasets=False,
        orpheus_encode_cluster="ray",
        orpheus_codes_cache=str(tmp_path / "codes"),
        **options,
    )
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    axolotl("preprocess", path, tmp_path)
    prepared = newest_prepared_dataset(tmp_path / "prepared")
    report = json.loads((prepared / "orpheus_report.json").read_text())["total"]
    return list(load_from_disk(str(prepared))["input_ids"]), report


def test_rows_equal_the_local_paths(ray_cluster, axolotl, tmp_path, standins, parquet_with_bad_rows, local):
    """A parquet dataset carrying its audio's bytes (a path dataset's files must be on every node: the next test):
    the local path's rows, and its drops (the bad clip, the long one found by its probe on the cluster)."""
    rows, report = preprocess(axolotl, tmp_path, standins, [parquet_with_bad_rows])

    assert rows == local[parquet_with_bad_rows]
    dropped = {reason: entry["count"] for reason, entry in report["dropped"].items()}
    assert dropped == {"non_finite_samples": 1, "longer_than_sequence_len": 1}
    assert report["encode_retries"] == 0


def test_an_encoding_actor_lost_mid_run_is_restarted_and_counted(
    ray_cluster, axolotl, tmp_path, standins, voices, local, monkeypatch
):
    """The SNAC actor's process is killed (as a lost node or the OOM killer would) when its first codes reach the
    driver, with chunks still to encode: Ray restarts it and runs them again; the rows are the local path's and the
    restart is counted in the report. Codes reach the cache as they arrive, so an interrupted run keeps them."""
    from ray.data import Dataset

    monkeypatch.setattr(cluster, "BLOCK_SECONDS", 0.0)  # a Ray block per chunk: 5, most still to come at the kill
    killed, cached = [], []
    iter_batches = Dataset.iter_batches

    def killing_after_the_first(self, *args, **kwargs):
        for batch in iter_batches(self, *args, **kwargs):
            if not killed:
                killed.append(int(str(batch["worker"][0]).split(":")[1]))  # node:pid
                os.kill(killed[0], signal.SIGKILL)
            else:
                cached.append(len(list((tmp_path / "codes").rglob("*.codes"))))
            yield batch

    monkeypatch.setattr(Dataset, "iter_batches", killing_after_the_first)
    rows, report = preprocess(axolotl, tmp_path, standins, [voices])

    assert killed and cached[0] > 0  # the first block's codes were in the cache when the second came
    assert rows == local[voices / "metadata.csv"]
    assert report["encode_retries"] == 1


def test_a_bad_clip_stops_the_run_naming_its_row_when_asked(ray_cluster, axolotl, tmp_path, standins, audiofolder_24k):
    folder = with_nan_clip(audiofolder_24k, tmp_path / "voice")
    with pytest.raises(RowError, match=r"row 1 \(nan.wav\): 1 samples are NaN or infinite"):
        preprocess(axolotl, tmp_path, standins, [folder], orpheus_on_bad_row="raise")
