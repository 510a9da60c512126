"""`axolotl-orpheus`: demo, init, decode, speak, report and cache, thin on top of the package's functions."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import yaml

from axolotl_orpheus.args import DEFAULT_BASE_MODEL, DEFAULT_SEQUENCE_LEN, DEFAULT_SNAC_MODEL

DATA = resources.files("axolotl_orpheus") / "data"
BUNDLED_CLIPS = DATA / "clips"
STANDINS_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "axolotl_orpheus"


def decode_row(prepared_dir: Path, row: int, snac_model: str, out: Path, device: str | None = None) -> float:
    """Decode one prepared row's audio tokens back to a 24 kHz wav; returns its duration in seconds."""
    from datasets import load_from_disk

    from axolotl_orpheus import codec, layout
    from axolotl_orpheus.audio import SAMPLE_RATE, write_wav

    rows = load_from_disk(str(prepared_dir))
    if not 0 <= row < len(rows):
        raise SystemExit(f"{prepared_dir} has rows 0..{len(rows) - 1}; there is no row {row}")
    try:
        frames = layout.speech_frames(rows[row]["input_ids"])
    except ValueError as exc:
        raise SystemExit(f"row {row} of {prepared_dir} is not a well-formed Orpheus row: {exc}") from exc
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


def speak(args: argparse.Namespace) -> None:
    from axolotl_orpheus import codec
    from axolotl_orpheus import speak as speaking
    from axolotl_orpheus.audio import SAMPLE_RATE, write_wav

    model, tokenizer = speaking.load_speaker_model(args.model, args.device)
    samples = speaking.speak(
        model,
        tokenizer,
        codec.load_snac(args.snac_model, args.device),
        args.text,
        args.voice,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
    )
    write_wav(Path(args.out), samples, SAMPLE_RATE)
    print(f"wrote {args.out} ({len(samples) / SAMPLE_RATE:.2f} s at 24 kHz)")


def init(args: argparse.Namespace) -> None:
    from axolotl_orpheus import starter

    found = starter.survey(args.dataset)
    print(found.summary())
    for warning in found.warnings(args.sequence_len):
        print(f"warning: {warning}")
    if not found.speaker_column and not args.voice:
        print("note: no speaker column and no --voice: prompts are the text alone; --voice NAME names the voice")
    out = Path(args.out)
    out.write_text(starter.write_config(found, str(out), args.voice, args.base_model, args.snac_model, args.sequence_len))
    print(f"wrote {out}: run `axolotl preprocess {out}` then `axolotl train {out}`")


def report(args: argparse.Namespace) -> None:
    import json

    from axolotl_orpheus.report import REPORT_FILE, plot_report, report_table

    path = Path(args.prepared_dir) / REPORT_FILE
    if not path.is_file():
        raise SystemExit(f"no {REPORT_FILE} in {args.prepared_dir}: run `axolotl preprocess` with the Orpheus plugin")
    content = json.loads(path.read_text())
    print(report_table(content))
    png = plot_report(content, Path(args.png or Path(args.prepared_dir) / "orpheus_report.png"))
    print(f"\nwrote {png}")


def cache(args: argparse.Namespace) -> None:
    import time

    from axolotl_orpheus import cache as codes_cache

    root = Path(args.folder) if args.folder else codes_cache.default_root()
    if args.delete_unused_for is not None:
        if args.delete_unused_for < 0:
            raise SystemExit("--delete-unused-for takes a number of days, 0 or more")
        deleted, freed = codes_cache.delete_unused(root, args.delete_unused_for)
        print(f"deleted the codes of {_count(deleted, 'clip')} unused for {args.delete_unused_for:g} days "
              f"({freed / 1e6:.1f} MB)")
    found = codes_cache.namespaces(root)
    if not found:
        print(f"no codes in {root}")
        return
    clips, size = sum(n.entries for n in found), sum(n.disk_bytes for n in found)
    print(f"codes cache {root}: {_count(clips, 'clip')}, {size / 1e6:.1f} MB on disk, in {_count(len(found), 'namespace')}")
    for namespace in found:
        about = namespace.about
        used = time.strftime("%Y-%m-%d", time.localtime(namespace.last_used)) if namespace.last_used else "never"
        print(f"  {namespace.folder.name}  {about.get('snac_model') or 'SNAC model unknown'} ({about.get('encoder', '?')}): "
              f"{_count(namespace.entries, 'clip')}, {namespace.disk_bytes / 1e6:.1f} MB, last used {used}")
        print(f"      {about.get('pipeline', '')} (written by {about.get('written_by', '?')})")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


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

    speak_parser = commands.add_parser("speak", help="speak text with a model or LoRA adapter into a 24 kHz wav")
    speak_parser.add_argument("--model", required=True, help="a model folder, a hub id or a LoRA adapter folder")
    speak_parser.add_argument("--text", required=True)
    speak_parser.add_argument("--voice", default=None, help='the speaker name of "{voice}: {text}"; default: text only')
    speak_parser.add_argument("--out", default="speech.wav")
    speak_parser.add_argument("--snac-model", default=DEFAULT_SNAC_MODEL)
    speak_parser.add_argument("--max-new-tokens", type=int, default=1200, help="per sentence piece; 7 per frame")
    speak_parser.add_argument("--temperature", type=float, default=0.6)
    speak_parser.add_argument("--top-p", type=float, default=0.95)
    speak_parser.add_argument("--repetition-penalty", type=float, default=1.1)
    speak_parser.add_argument("--seed", type=int, default=0)
    speak_parser.add_argument("--device", default=None, help="default: cuda, then mps, then cpu")
    speak_parser.set_defaults(func=speak)

    init_parser = commands.add_parser("init", help="inspect a raw audio dataset and write a finetune.yml for it")
    init_parser.add_argument("dataset", help="a folder with metadata.csv, a parquet/csv file, or a hub dataset id")
    init_parser.add_argument("--voice", default=None, help="speaker name for a single-voice dataset")
    init_parser.add_argument("--out", default="finetune.yml")
    init_parser.add_argument("--base-model", default=DEFAULT_BASE_MODEL)
    init_parser.add_argument("--snac-model", default=DEFAULT_SNAC_MODEL)
    init_parser.add_argument("--sequence-len", type=int, default=DEFAULT_SEQUENCE_LEN)
    init_parser.set_defaults(func=init)

    report_parser = commands.add_parser("report", help="print a prepared dataset's report and plot it to a PNG")
    report_parser.add_argument("prepared_dir", help="a prepared dataset folder (dataset_prepared_path/<hash>)")
    report_parser.add_argument("--png", default=None, help="default: PREPARED_DIR/orpheus_report.png")
    report_parser.set_defaults(func=report)

    cache_parser = commands.add_parser("cache", help="list the SNAC codes cache's namespaces; delete what went unused")
    cache_parser.add_argument("folder", nargs="?", help="default: HF_DATASETS_CACHE/orpheus_codes (orpheus_codes_cache: true)")
    cache_parser.add_argument("--delete-unused-for", type=float, metavar="DAYS",
                              help="delete entries neither written nor read for DAYS days, then namespaces left empty")
    cache_parser.set_defaults(func=cache)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
