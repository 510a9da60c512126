"""`axolotl-orpheus`: demo, segment, init, decode, speak, evaluate, check-transcripts, report and cache, thin on top
of the package's functions."""

from __future__ import annotations

import argparse
from pathlib import Path

from axolotl_orpheus.args import (
    DEFAULT_ASR_MODEL,
    DEFAULT_BASE_MODEL,
    DEFAULT_MAX_CER,
    DEFAULT_SEQUENCE_LEN,
    DEFAULT_SNAC_MODEL,
    DEFAULT_SPEAKER_MODEL,
)


def demo(args: argparse.Namespace) -> None:
    from axolotl_orpheus.cli.demo import run_demo

    run = run_demo(Path(args.out), args.max_steps)
    print(
        f"\nDone.\n  config:        {run.config}\n  prepared rows: {run.prepared}\n  model:         {run.model}\n"
        f"  listen:        {run.listen} ({run.listen_seconds:.2f} s, row 0 decoded back through SNAC)"
    )


def decode(args: argparse.Namespace) -> None:
    from axolotl_orpheus.cli.demo import decode_row

    seconds = decode_row(Path(args.prepared_dir), args.row, args.snac_model, Path(args.out), args.device)
    print(f"wrote {args.out} ({seconds:.2f} s at 24 kHz)")


def speak(args: argparse.Namespace) -> None:
    from axolotl_orpheus import codec
    from axolotl_orpheus.audio import SAMPLE_RATE, write_wav
    from axolotl_orpheus.listen import speak as speaking
    from axolotl_orpheus.listen.voice import load_model

    model, tokenizer = load_model(args.model, args.device)
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


def evaluate(args: argparse.Namespace) -> None:
    from axolotl_orpheus.listen.evaluation import evaluate_checkpoints, metrics_table

    if (args.prepared is None) == (args.texts is None):
        raise SystemExit("evaluate: give the rows to speak, either --prepared DIR or --texts FILE")
    texts = None
    if args.texts:
        texts = [line.strip() for line in Path(args.texts).read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise SystemExit(f"evaluate: {args.texts} holds no text; write one sentence per line")
    reports = evaluate_checkpoints(
        args.model,
        Path(args.out),
        prepared=Path(args.prepared) if args.prepared else None,
        rows=args.rows,
        texts=texts,
        voice=args.voice,
        references=[Path(path) for path in args.reference],
        asr_model=args.asr_model,
        speaker_model=args.speaker_model,
        snac_model=args.snac_model,
        language=args.language,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        device=args.device,
    )
    print(metrics_table(reports))
    print(f"\nwrote {Path(args.out) / 'metrics.json'} and one folder of wavs per model under {args.out}")


def check_transcripts(args: argparse.Namespace) -> None:
    from axolotl_orpheus.listen.asr import ASR
    from axolotl_orpheus.recordings.transcripts import check_transcripts as check
    from axolotl_orpheus.recordings.transcripts import summary_text, write_report

    report = check(args.dataset, ASR(args.asr_model, args.device, args.language), args.threshold)
    print(summary_text(report))
    print("wrote " + " and ".join(map(str, write_report(report, Path(args.out)))))


def init(args: argparse.Namespace) -> None:
    from axolotl_orpheus.recordings import survey

    found = survey.survey(args.dataset)
    print(found.summary())
    for warning in found.warnings(args.sequence_len):
        print(f"warning: {warning}")
    if not found.speaker_column and not args.voice:
        print("note: no speaker column and no --voice: prompts are the text alone; --voice NAME names the voice")
    out = Path(args.out)
    out.write_text(
        survey.write_config(found, str(out), args.voice, args.base_model, args.snac_model, args.sequence_len)
    )
    print(f"wrote {out}: run `axolotl preprocess {out}` then `axolotl train {out}`")


def segment(args: argparse.Namespace) -> None:
    from axolotl_orpheus.recordings.segment import REPORT_FILE, segment_recordings, summary

    report = segment_recordings(
        args.recordings,
        args.out,
        speaker=args.speaker,
        transcript=args.transcript,
        asr_model=args.asr_model,
        language=args.language,
        min_seconds=args.min_seconds,
        max_seconds=args.max_seconds,
        max_cer=args.max_cer,
        device=args.device,
        on_bad=args.on_bad,
    )
    print(summary(report))
    print(
        f"wrote {Path(args.out) / 'metadata.csv'} and {Path(args.out) / REPORT_FILE}: "
        f"next, `axolotl-orpheus init {args.out}`"
    )


def report(args: argparse.Namespace) -> None:
    import json

    from axolotl_orpheus.prepare.report import REPORT_FILE, plot_report, report_table

    path = Path(args.prepared_dir) / REPORT_FILE
    if not path.is_file():
        raise SystemExit(f"no {REPORT_FILE} in {args.prepared_dir}: run `axolotl preprocess` with the Orpheus plugin")
    content = json.loads(path.read_text())
    print(report_table(content))
    png = plot_report(content, Path(args.png or Path(args.prepared_dir) / "orpheus_report.png"))
    print(f"\nwrote {png}")


def cache(args: argparse.Namespace) -> None:
    from axolotl_orpheus.prepare import cache as codes_cache

    root = Path(args.folder) if args.folder else codes_cache.default_root()
    if args.delete_unused_for is not None:
        if args.delete_unused_for < 0:
            raise SystemExit("--delete-unused-for takes a number of days, 0 or more")
        deleted, freed = codes_cache.delete_unused(root, args.delete_unused_for)
        print(
            f"deleted the codes of {codes_cache.plural(deleted, 'clip')} unused for {args.delete_unused_for:g} "
            f"days ({freed / 1e6:.1f} MB)"
        )
    print(codes_cache.listing(root))


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

    evaluate_parser = commands.add_parser(
        "evaluate", help="score checkpoints: ASR round trip, speaker similarity, stopping, duration, loops"
    )
    evaluate_parser.add_argument(
        "--model",
        required=True,
        action="append",
        help="a model folder, hub id or LoRA adapter folder; repeat to compare several",
    )
    evaluate_parser.add_argument("--prepared", default=None, help="a prepared dataset folder: speak its first rows")
    evaluate_parser.add_argument("--rows", type=int, default=8, help="how many of the prepared rows")
    evaluate_parser.add_argument("--texts", default=None, help="or a text file, one sentence per line")
    evaluate_parser.add_argument("--voice", default=None, help="the voice name to speak --texts in")
    evaluate_parser.add_argument(
        "--reference",
        nargs="*",
        default=[],
        metavar="WAV",
        help="clips of the voice for --texts: one per text, or any number for the voice",
    )
    evaluate_parser.add_argument("--asr-model", default=DEFAULT_ASR_MODEL)
    evaluate_parser.add_argument("--speaker-model", default=DEFAULT_SPEAKER_MODEL)
    evaluate_parser.add_argument("--snac-model", default=DEFAULT_SNAC_MODEL)
    evaluate_parser.add_argument("--language", default=None, help="e.g. en; default: detected per sample")
    evaluate_parser.add_argument("--max-new-tokens", type=int, default=1200, help="per sample; 7 per frame")
    evaluate_parser.add_argument("--seed", type=int, default=0)
    evaluate_parser.add_argument("--device", default=None, help="default: cuda, then mps, then cpu")
    evaluate_parser.add_argument("--out", required=True, help="folder for metrics.json and the wavs")
    evaluate_parser.set_defaults(func=evaluate)

    check_parser = commands.add_parser(
        "check-transcripts", help="transcribe a dataset's clips and list the rows whose text does not match"
    )
    check_parser.add_argument("dataset", help="a folder with metadata.csv, a parquet/csv file, or a hub dataset id")
    check_parser.add_argument("--asr-model", default=DEFAULT_ASR_MODEL)
    check_parser.add_argument("--language", default=None, help="e.g. en; default: detected per clip")
    check_parser.add_argument(
        "--threshold", type=float, default=DEFAULT_MAX_CER, help="list rows with a CER above this"
    )
    check_parser.add_argument("--out", default="transcript_check", help="writes OUT.json and OUT.csv")
    check_parser.add_argument("--device", default=None, help="default: cuda, then mps, then cpu")
    check_parser.set_defaults(func=check_transcripts)

    init_parser = commands.add_parser("init", help="inspect a raw audio dataset and write a finetune.yml for it")
    init_parser.add_argument("dataset", help="a folder with metadata.csv, a parquet/csv file, or a hub dataset id")
    init_parser.add_argument("--voice", default=None, help="speaker name for a single-voice dataset")
    init_parser.add_argument("--out", default="finetune.yml")
    init_parser.add_argument("--base-model", default=DEFAULT_BASE_MODEL)
    init_parser.add_argument("--snac-model", default=DEFAULT_SNAC_MODEL)
    init_parser.add_argument("--sequence-len", type=int, default=DEFAULT_SEQUENCE_LEN)
    init_parser.set_defaults(func=init)

    segment_parser = commands.add_parser(
        "segment", help="cut long recordings at pauses into transcribed clips: a folder that init and preprocess read"
    )
    segment_parser.add_argument(
        "recordings",
        nargs="+",
        metavar="RECORDING_OR_FOLDER",
        help="audio files, or folders of them (searched through)",
    )
    segment_parser.add_argument("--out", required=True, help="the folder to write: clips, metadata.csv, the report")
    segment_parser.add_argument("--speaker", default=None, help="the speaker column's value; default: --out's name")
    segment_parser.add_argument(
        "--transcript",
        default=None,
        metavar="FILE_OR_FOLDER",
        help="the recording's known text (a folder: RECORDING_NAME.txt for each): clips "
        "keep it, split by the ASR's words, instead of what the ASR heard",
    )
    segment_parser.add_argument("--asr-model", default=DEFAULT_ASR_MODEL, help="a Whisper hub id or local folder")
    segment_parser.add_argument("--language", default=None, help="e.g. en; default: detected per clip")
    segment_parser.add_argument("--min-seconds", type=float, default=1.0, help="shorter clips are dropped")
    segment_parser.add_argument("--max-seconds", type=float, default=20.0, help="longer speech is cut")
    segment_parser.add_argument(
        "--max-cer",
        type=float,
        default=DEFAULT_MAX_CER,
        help="with --transcript: drop clips whose heard text is further than this (a "
        "character error rate) from their known text",
    )
    segment_parser.add_argument("--device", default=None, help="for the ASR; default: cuda, then mps, then cpu")
    segment_parser.add_argument(
        "--on-bad",
        choices=["skip", "raise"],
        default="skip",
        help="a recording that cannot be read: report it and go on, or stop",
    )
    segment_parser.set_defaults(func=segment)

    report_parser = commands.add_parser("report", help="print a prepared dataset's report and plot it to a PNG")
    report_parser.add_argument("prepared_dir", help="a prepared dataset folder (dataset_prepared_path/<hash>)")
    report_parser.add_argument("--png", default=None, help="default: PREPARED_DIR/orpheus_report.png")
    report_parser.set_defaults(func=report)

    cache_parser = commands.add_parser("cache", help="list the SNAC codes cache's namespaces; delete what went unused")
    cache_parser.add_argument(
        "folder", nargs="?", help="default: HF_DATASETS_CACHE/orpheus_codes (orpheus_codes_cache: true)"
    )
    cache_parser.add_argument(
        "--delete-unused-for",
        type=float,
        metavar="DAYS",
        help="delete entries neither written nor read for DAYS days, then namespaces left empty",
    )
    cache_parser.set_defaults(func=cache)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
