"""`axolotl-orpheus`: the CPU demo and decoding prepared rows, thin on top of the package's functions."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import yaml

from axolotl_orpheus.args import DEFAULT_SNAC_MODEL

DEFAULT_TOKENIZER = "canopylabs/orpheus-3b-0.1-pretrained"
BUNDLED_CLIPS = resources.files("axolotl_orpheus") / "data" / "clips"
STANDINS_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "axolotl_orpheus"


def write_wav(path: Path, samples, sample_rate: int) -> None:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, sample_rate, subtype="PCM_16")


def decode_row(prepared_dir: Path, row: int, snac_model: str, out: Path, device: str | None = None) -> float:
    """Decode one prepared row's audio tokens back to a 24 kHz wav; returns its duration in seconds."""
    from datasets import load_from_disk

    from axolotl_orpheus import codec, layout
    from axolotl_orpheus.audio import SAMPLE_RATE

    rows = load_from_disk(str(prepared_dir))
    if not 0 <= row < len(rows):
        raise SystemExit(f"{prepared_dir} has rows 0..{len(rows) - 1}; there is no row {row}")
    frames = layout.speech_frames(rows[row]["input_ids"])
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


def demo_config(out: Path, tokenizer: str, snac_model: str, base_model: Path, max_steps: int) -> dict:
    """The CPU demo's axolotl config: the bundled clips, a tiny model, a few training steps."""
    return {
        "base_model": str(base_model),
        "tokenizer_config": tokenizer,
        "plugins": ["axolotl_orpheus.OrpheusPlugin"],
        "datasets": [{"path": str(BUNDLED_CLIPS), "type": "axolotl_orpheus.tts"}],
        "orpheus_snac_model": snac_model,
        "dataset_prepared_path": str(out / "prepared"),
        "output_dir": str(out / "model"),
        "special_tokens": {"pad_token": "<custom_token_7>"},
        "sequence_len": 1024,
        "sample_packing": False,
        "val_set_size": 0,
        "dataset_num_proc": 1,
        "micro_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_steps": max_steps,
        "learning_rate": 1e-3,
        "optimizer": "adamw_torch",
        "lr_scheduler": "cosine",
        "bf16": False,
        "fp16": False,
        "tf32": False,
        "attn_implementation": "sdpa",
        "logging_steps": 1,
        "save_safetensors": True,
        "seed": 42,
    }


def newest_prepared_dataset(prepared_root: Path) -> Path:
    """The prepared dataset folder `axolotl preprocess` just wrote (dataset_prepared_path/<hash>)."""
    folders = [p.parent for p in prepared_root.glob("*/dataset_info.json")]
    if not folders:
        raise SystemExit(f"no prepared dataset under {prepared_root}")
    return max(folders, key=lambda p: p.stat().st_mtime)


def run_axolotl(command: str, config: Path, env: dict[str, str]) -> None:
    print(f"\n$ axolotl {command} {config}", flush=True)
    subprocess.run([sys.executable, "-m", "axolotl.cli.main", command, str(config)], check=True, env=env)


def demo(args: argparse.Namespace) -> None:
    from axolotl_orpheus.standins import build_standins

    out = Path(args.out).resolve()
    # axolotl train starts `accelerate` from PATH: put this interpreter's scripts first, as an active venv would.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "AXOLOTL_DO_NOT_TRACK": "1", "PATH": path}
    standins = build_standins(STANDINS_CACHE / "standins")
    # A 3B model does not train on a CPU: the demo always trains a tiny Llama with Orpheus' vocabulary.
    if hub_answers(DEFAULT_SNAC_MODEL) and hub_answers(DEFAULT_TOKENIZER):
        tokenizer, snac_model = DEFAULT_TOKENIZER, DEFAULT_SNAC_MODEL
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
    config.write_text(yaml.safe_dump(demo_config(out, tokenizer, snac_model, standins["model"], args.max_steps)))
    run_axolotl("preprocess", config, env)
    run_axolotl("train", config, env)
    prepared = newest_prepared_dataset(out / "prepared")
    listen = out / "row0.wav"
    seconds = decode_row(prepared, 0, snac_model, listen)
    print(
        f"\nDone.\n  config:        {config}\n  prepared rows: {prepared}\n  model:         {out / 'model'}\n"
        f"  listen:        {listen} ({seconds:.2f} s, row 0 decoded back through SNAC)"
    )


def decode(args: argparse.Namespace) -> None:
    seconds = decode_row(Path(args.prepared_dir), args.row, args.snac_model, Path(args.out), args.device)
    print(f"wrote {args.out} ({seconds:.2f} s at 24 kHz)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="axolotl-orpheus", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo_parser = commands.add_parser(
        "demo", help="preprocess the bundled clips, train a tiny model on CPU, decode a row to a wav"
    )
    demo_parser.add_argument("--out", default="demo-run", help="folder for the config, rows, model and wav")
    demo_parser.add_argument("--max-steps", type=int, default=10, help="training steps")
    demo_parser.set_defaults(func=demo)

    decode_parser = commands.add_parser("decode", help="decode one prepared row back to a 24 kHz wav")
    decode_parser.add_argument("prepared_dir", help="a prepared dataset folder (dataset_prepared_path/<hash>)")
    decode_parser.add_argument("--row", type=int, default=0)
    decode_parser.add_argument("--out", default="row.wav")
    decode_parser.add_argument("--snac-model", default=DEFAULT_SNAC_MODEL)
    decode_parser.add_argument("--device", default=None, help="default: cuda, then mps, then cpu")
    decode_parser.set_defaults(func=decode)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
