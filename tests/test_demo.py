"""The README's main job: `axolotl-orpheus demo` on a machine where the model hub does not answer.

The suite's one run of axolotl's real `preprocess` and `train` processes (`train` through `accelerate launch`); the
other tests run axolotl's commands in their own process (the `axolotl` fixture, tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import soundfile
from datasets import load_from_disk

from axolotl_orpheus.cli.demo import newest_prepared_dataset


def test_demo_preprocesses_trains_and_decodes(tmp_path, cache_home, standins):
    out = tmp_path / "demo"
    cli = Path(sys.executable).parent / "axolotl-orpheus"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    env.pop("AXOLOTL_TEE_STDOUT")  # as users run it: axolotl's stdout tee on (tests/conftest.py turns it off)
    result = subprocess.run(
        [str(cli), "demo", "--out", str(out), "--max-steps", "2"], capture_output=True, text=True, env=env, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "The model hub does not answer: using local stand-ins" in result.stdout
    assert f"model:         {out / 'model'}" in result.stdout
    assert len(load_from_disk(str(newest_prepared_dataset(out / "prepared")))) == 6  # the six bundled clips
    assert (out / "model" / "model.safetensors").is_file()
    samples, rate = soundfile.read(out / "row0.wav")
    assert rate == 24000 and len(samples) % 2048 == 0 and len(samples) > 0
