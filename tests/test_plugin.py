"""The plugin through axolotl's real config loading: audiofolders, the prepared-dataset hash, clear errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml
from axolotl.cli.config import load_cfg
from axolotl.utils.data.shared import generate_dataset_hash_from_config
from axolotl.utils.dict import DictDefault

from axolotl_orpheus.args import FINGERPRINT_KEY, SOURCE_KEY
from axolotl_orpheus.cli.demo import BUNDLED_CLIPS, demo_config
from axolotl_orpheus.plugin import OrpheusPlugin
from helpers import validated

# A value other than the default for every orpheus_* key.
CHANGED_SETTINGS = {
    "orpheus_snac_model": "someone/snac_24khz_finetuned",
    "orpheus_audio_column": "wav",
    "orpheus_text_column": "sentence",
    "orpheus_speaker_column": "voice",
    "orpheus_remove_duplicate_frames": False,
    "orpheus_train_on_text": False,
    "orpheus_device": "cpu",
    "orpheus_encode_batch_size": 4,
    "orpheus_encode_devices": ["cpu", "cpu"],
    "orpheus_compile": True,
    "orpheus_on_bad_row": "raise",
    "orpheus_max_seconds": 30,
    "orpheus_min_seconds": 0.5,
    "orpheus_dnsmos": True,
    "orpheus_min_dnsmos": 3.0,
}


def prepared_hash(cfg: DictDefault) -> str:
    return generate_dataset_hash_from_config(cfg, cfg.datasets, cfg.tokenizer_config)


def test_covers_every_setting():
    from axolotl_orpheus.args import NOT_IN_ROWS, OrpheusArgs

    assert set(CHANGED_SETTINGS) == set(OrpheusArgs.model_fields) - NOT_IN_ROWS


def test_settings_outside_the_rows_keep_the_prepared_dataset(tmp_path, standins):
    """Sample prompts, scoring, the codes cache's folder and SNAC's C kernels never change a row: editing them must
    not re-prepare."""
    baseline = prepared_hash(validated(tmp_path, standins))
    changed = validated(
        tmp_path,
        standins,
        orpheus_sample_prompts=[{"voice": "ada", "text": "Hi."}],
        orpheus_sample_max_new_tokens=70,
        orpheus_codes_cache=str(tmp_path / "elsewhere"),
        orpheus_cpu_kernels=False,
        orpheus_eval_samples=4,
        orpheus_asr_model="someone/whisper",
        orpheus_eval_language="fr",
        orpheus_speaker_model="someone/xvector",
    )
    assert changed.orpheus_sample_prompts[0]["voice"] == "ada"
    assert changed.orpheus_codes_cache == str(tmp_path / "elsewhere")
    assert changed.orpheus_cpu_kernels is False
    assert (changed.orpheus_eval_samples, changed.orpheus_speaker_model) == (4, "someone/xvector")
    assert prepared_hash(changed) == baseline


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"orpheus_min_seconds": 3, "orpheus_max_seconds": 2},
            r"orpheus_min_seconds \(3\) is more than orpheus_max_seconds \(2\), which would drop every clip",
        ),
        (
            {"orpheus_encode_devices": ["cuda:0", "cpu"]},
            r"orpheus_encode_devices \[.cuda:0., .cpu.\] mixes device kinds \[.cpu., .cuda.\]; "
            "list devices of one kind",
        ),
    ],
)
def test_keys_that_disagree_are_refused_when_the_config_loads(tmp_path, standins, changes, message):
    with pytest.raises(ValueError, match=message):
        validated(tmp_path, standins, **changes)


def test_every_orpheus_setting_changes_the_prepared_dataset(tmp_path, standins):
    """axolotl's hash ignores plugin keys; the plugin's fingerprint makes each one count."""
    baseline = prepared_hash(validated(tmp_path, standins))
    assert prepared_hash(validated(tmp_path, standins)) == baseline
    hashes = {
        key: prepared_hash(validated(tmp_path, standins, **{key: value})) for key, value in CHANGED_SETTINGS.items()
    }
    assert baseline not in hashes.values()
    assert len(set(hashes.values())) == len(hashes)


def test_an_audiofolder_path_reads_its_metadata(tmp_path, standins):
    cfg = validated(tmp_path, standins)
    entry = cfg.datasets[0]
    assert entry.path == str(BUNDLED_CLIPS)
    assert entry.ds_type == "parquet"
    assert entry.message_property_mappings[SOURCE_KEY] == str(BUNDLED_CLIPS / "metadata.csv")
    assert FINGERPRINT_KEY in entry.message_property_mappings


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "hub"])
def test_other_paths_are_left_alone(tmp_path, kind):
    folder = tmp_path / "data"
    folder.mkdir()
    if kind == "jsonl":
        (folder / "metadata.jsonl").write_text('{"file_name": "a.wav", "text": "hi"}\n')
        expected = (str(folder / "metadata.jsonl"), "json")
    elif kind == "parquet":
        (folder / "train.parquet").write_bytes(b"")
        expected = (str(folder), None)
    else:
        folder = "someone/speech-dataset"
        expected = (folder, None)
    cfg = DictDefault({"datasets": [{"path": str(folder), "type": "axolotl_orpheus.tts"}]})
    OrpheusPlugin().register(cfg)
    assert (cfg.datasets[0].path, cfg.datasets[0].get("ds_type")) == expected


def test_the_strategy_without_the_plugin_says_to_add_it(tokenizer):
    from axolotl.prompt_strategies import load

    with pytest.raises(ValueError, match=r"plugins:\n  - axolotl_orpheus.OrpheusPlugin"):
        load(
            "axolotl_orpheus.tts", tokenizer, DictDefault({}), DictDefault({"path": "x", "type": "axolotl_orpheus.tts"})
        )


def test_a_missing_dependency_is_named_not_swallowed():
    """axolotl turns ModuleNotFoundError into "unhandled prompt tokenization strategy"; we name the package."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["soxr"] = None  # makes `import soxr` raise ModuleNotFoundError
        from axolotl.prompt_strategies import load
        try:
            load("axolotl_orpheus.tts", None, {}, {})
        except RuntimeError as exc:
            print("RAISED:", exc)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "RAISED: axolotl_orpheus.tts needs the package `soxr`" in result.stdout, result.stderr[-2000:]


def test_the_example_config_validates(tmp_path, standins):
    """examples/finetune.yml passes axolotl's validation with the plugin (model and data pointed local)."""
    from pathlib import Path

    config = yaml.safe_load((Path(__file__).parents[1] / "examples" / "finetune.yml").read_text())
    config["base_model"] = str(standins["model"])
    config["datasets"][0]["path"] = str(BUNDLED_CLIPS)
    path = tmp_path / "finetune.yml"
    path.write_text(yaml.safe_dump(config))
    cfg = load_cfg(str(path))
    assert cfg.orpheus_snac_model == "hubertsiuzdak/snac_24khz"
    assert cfg.orpheus_remove_duplicate_frames is True and cfg.orpheus_train_on_text is True
    assert cfg.datasets[0].ds_type == "parquet"


def test_per_dataset_keys_survive_validation(tmp_path, standins):
    """The per-dataset keys live in message_property_mappings, which axolotl's validation keeps."""
    entry = {
        "path": str(BUNDLED_CLIPS),
        "type": "axolotl_orpheus.tts",
        "message_property_mappings": {"voice": "tara", "text": "sentence"},
    }
    cfg = validated(tmp_path, standins, datasets=[entry])
    mappings = cfg.datasets[0].message_property_mappings
    assert (mappings["voice"], mappings["text"]) == ("tara", "sentence")
    assert FINGERPRINT_KEY in mappings


LOADING_SNAC_IN_AXOLOTL = """
import sys
import axolotl.cli  # sets up axolotl's logging, as its commands do
from axolotl_orpheus import codec
from axolotl_orpheus.plugin import OrpheusPlugin

OrpheusPlugin().register({})  # as axolotl's config loading does
codec.load_snac(sys.argv[1], "cpu", cpu_kernels=False)
"""


def test_the_packages_info_lines_reach_axolotls_log(standins):
    """axolotl shows INFO lines of loggers that its own setup lets through: the plugin's registration lets through
    the package's (one logging.getLogger(__name__) per module, under the logger axolotl_orpheus), e.g. which SNAC
    path runs. (tests/test_e2e.py reads the same line from a real `axolotl preprocess` log.)"""
    result = subprocess.run(
        [sys.executable, "-c", LOADING_SNAC_IN_AXOLOTL, str(standins["snac"])],
        capture_output=True,
        text=True,
        check=True,
    )
    line = f"[INFO] [axolotl_orpheus.codec.loading] SNAC {standins['snac']} on cpu: torch's kernels"
    assert line in result.stdout, result.stdout + result.stderr


def test_the_report_counts_the_orpheus_rows_beside_another_dataset(tmp_path, axolotl, standins, audiofolder_24k):
    """A config mixing an Orpheus dataset with a text one (axolotl's completion strategy): axolotl merges their rows
    (their column types match), the saved rows hold both, and the report's figures are the Orpheus rows' alone
    (no negative dropped_by_axolotl)."""
    import json

    from datasets import load_from_disk

    from axolotl_orpheus.cli.demo import newest_prepared_dataset

    text = tmp_path / "text.jsonl"
    text.write_text("".join(json.dumps({"text": f"A plain text row, number {n}."}) + "\n" for n in range(5)))
    config = demo_config(tmp_path, str(standins["tokenizer"]), str(standins["snac"]), standins["model"], 1)
    config["datasets"] = [
        {"path": str(audiofolder_24k), "type": "axolotl_orpheus.tts"},
        {"path": str(text), "ds_type": "json", "type": "completion"},
    ]
    path = tmp_path / "mixed.yml"
    path.write_text(yaml.safe_dump(config))
    axolotl("preprocess", path, tmp_path)
    prepared = newest_prepared_dataset(tmp_path / "prepared")
    total = json.loads((prepared / "orpheus_report.json").read_text())["total"]
    assert len(load_from_disk(str(prepared))) == 6 + 5
    assert (total["rows_in"], total["rows_out"]) == (6, 6) and "dropped_by_axolotl" not in total
