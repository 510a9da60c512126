"""The CPU demo (preprocess the bundled clips, train a tiny model, decode a row) and hearing a prepared row."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from axolotl_orpheus.args import DEFAULT_BASE_MODEL, DEFAULT_SNAC_MODEL
from axolotl_orpheus.cli import options
from axolotl_orpheus.errors import UserError

DATA = resources.files("axolotl_orpheus") / "data"
BUNDLED_CLIPS = DATA / "clips"
STANDINS_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "axolotl_orpheus"


def decode_row(prepared_dir: Path, row: int, snac_model: str, out: Path, device: str | None = None) -> float:
    """Decode one prepared row's audio tokens back to a 24 kHz wav; returns its duration in seconds."""
    from datasets import load_from_disk

    from axolotl_orpheus import codec, layout
    from axolotl_orpheus.audio import SAMPLE_RATE, write_wav

    if not (Path(prepared_dir) / "dataset_info.json").is_file():
        raise UserError(
            f"{prepared_dir} is not a prepared dataset; give dataset_prepared_path/<hash>, the folder `axolotl "
            "preprocess` wrote"
        )
    rows = load_from_disk(str(prepared_dir))
    if not 0 <= row < len(rows):
        raise UserError(f"{prepared_dir} has rows 0..{len(rows) - 1}; there is no row {row}")
    try:
        frames = layout.speech_frames(rows[row]["input_ids"])
    except ValueError as exc:
        raise UserError(f"row {row} of {prepared_dir} is not a well-formed Orpheus row: {exc}") from exc
    samples = codec.decode(codec.load_snac(snac_model, device), layout.deinterleave(frames))
    write_wav(out, samples, SAMPLE_RATE)
    return len(samples) / SAMPLE_RATE


def hub_answers(repo_id: str) -> bool:
    """Whether the model hub serves `repo_id` now (offline machines and HF_HUB_OFFLINE=1 say no)."""
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(repo_id, "config.json")
        return True
    except Exception:  # noqa: BLE001 - any failure to reach the hub means: use the stand-ins
        return False


def demo_config(out: Path, tokenizer: str, snac_model: str, base_model: Path, max_steps: int | None = None) -> dict:
    """The CPU demo's axolotl config: data/cpu-demo.yml (examples/cpu-demo.yml) with models and paths filled in."""
    config = yaml.safe_load((DATA / "cpu-demo.yml").read_text())
    config.update(
        base_model=str(base_model),
        tokenizer_config=tokenizer,
        datasets=[{"path": str(BUNDLED_CLIPS), "type": "axolotl_orpheus.tts"}],
        orpheus_snac_model=snac_model,
        dataset_prepared_path=str(out / "prepared"),
        output_dir=str(out / "model"),
    )
    if max_steps is not None:
        config["max_steps"] = max_steps
    return config


def newest_prepared_dataset(prepared_root: Path) -> Path:
    """The prepared dataset folder `axolotl preprocess` just wrote (dataset_prepared_path/<hash>)."""
    folders = [p.parent for p in prepared_root.glob("*/dataset_info.json")]
    if not folders:
        raise UserError(f"no prepared dataset under {prepared_root}")
    return max(folders, key=lambda p: p.stat().st_mtime)


def run_axolotl(command: str, config: Path, env: dict[str, str]) -> None:
    print(f"\n$ axolotl {command} {config}", flush=True)
    subprocess.run([sys.executable, "-m", "axolotl.cli.main", command, str(config)], check=True, env=env)


@dataclass(frozen=True)
class DemoRun:
    """What a demo run wrote: its config, prepared rows, model, and row 0 decoded back to a wav."""

    config: Path
    prepared: Path
    model: Path
    listen: Path
    listen_seconds: float


def run_demo(out: Path, max_steps: int | None) -> DemoRun:
    """Preprocess the bundled clips and train a tiny model on them with axolotl, then decode row 0 to a wav."""
    from axolotl_orpheus.cli.standins import build_standins

    out = out.resolve()
    # axolotl train starts `accelerate` from PATH: put this interpreter's scripts first, as an active venv would.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "AXOLOTL_DO_NOT_TRACK": "1", "PATH": path}
    standins = build_standins(STANDINS_CACHE / "standins")
    # A 3B model does not train on a CPU: the demo always trains a tiny Llama with Orpheus' vocabulary.
    if hub_answers(DEFAULT_SNAC_MODEL) and hub_answers(DEFAULT_BASE_MODEL):
        tokenizer, snac_model = DEFAULT_BASE_MODEL, DEFAULT_SNAC_MODEL
        print(f"Using the real tokenizer {tokenizer} and codec {snac_model}.")
    else:
        tokenizer, snac_model = str(standins["tokenizer"]), str(standins["snac"])
        env["HF_HUB_OFFLINE"] = "1"
        print(
            "The model hub does not answer: using local stand-ins, a tokenizer with the Orpheus layout and "
            "SNAC 24 kHz with random weights (so the decoded audio below is noise, not speech)."
        )
    config = out / "cpu-demo.yml"
    out.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(demo_config(out, tokenizer, snac_model, standins["model"], max_steps)))
    run_axolotl("preprocess", config, env)
    run_axolotl("train", config, env)
    prepared = newest_prepared_dataset(out / "prepared")
    listen = out / "row0.wav"
    seconds = decode_row(prepared, 0, snac_model, listen)
    return DemoRun(config, prepared, out / "model", listen, seconds)


def demo(args: argparse.Namespace) -> None:
    run = run_demo(Path(args.out), args.max_steps)
    print(
        f"\nDone.\n  config:        {run.config}\n  prepared rows: {run.prepared}\n  model:         {run.model}\n"
        f"  listen:        {run.listen} ({run.listen_seconds:.2f} s, row 0 decoded back through SNAC)"
    )


def add_demo(commands) -> None:
    parser = options.add_command(
        commands, "demo", "the CPU demo: preprocess the bundled clips, train a tiny model, decode a row to a wav", demo
    )
    parser.add_argument("--out", default="demo-run", help="the folder for the config, rows, model and wav")
    parser.add_argument("--max-steps", type=int, default=10, help="training steps")
