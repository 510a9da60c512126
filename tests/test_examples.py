"""Every example config passes axolotl's real validation with the plugin, so no example rots."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from axolotl.cli.config import load_cfg

from axolotl_orpheus.args import FINGERPRINT_KEY, OrpheusArgs

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.yml"))


def test_the_examples_are_there():
    expected = {"finetune.yml", "lora.yml", "multispeaker.yml", "new-language.yml", "cpu-demo.yml"}
    assert {p.name for p in EXAMPLES} >= expected


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(example, tmp_path, standins):
    config = yaml.safe_load(example.read_text())
    if example.name == "cpu-demo.yml":  # the demo fills in its models and paths at run time
        from axolotl_orpheus.cli.demo import demo_config

        config = demo_config(tmp_path, str(standins["tokenizer"]), str(standins["snac"]), standins["model"])
    config["base_model"] = str(standins["model"])  # no hub here: the tiny stand-in with Orpheus' vocabulary
    path = tmp_path / example.name
    path.write_text(yaml.safe_dump(config))
    cfg = load_cfg(str(path))
    assert "axolotl_orpheus.OrpheusPlugin" in cfg.plugins
    for entry in cfg.datasets:
        assert entry.type == "axolotl_orpheus.tts"
        assert FINGERPRINT_KEY in entry.message_property_mappings
    for key in OrpheusArgs.model_fields:  # every orpheus_* key set in the example arrived
        if config.get(key) is not None:
            assert cfg[key] == config[key]
