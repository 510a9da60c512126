"""The commands before training and around `axolotl preprocess`: segment, init, check, check-transcripts, report,
cache."""

from __future__ import annotations

import argparse
import functools
from dataclasses import astuple
from pathlib import Path

from axolotl_orpheus.args import DEFAULT_BASE_MODEL, DEFAULT_SEQUENCE_LEN, DEFAULT_SNAC_MODEL
from axolotl_orpheus.cli import options
from axolotl_orpheus.errors import UserError


def segment(args: argparse.Namespace) -> None:
    from axolotl_orpheus.recordings.segment import REPORT_FILE, segment_recordings, summary

    report = segment_recordings(
        args.recordings,
        args.out,
        speaker=args.voice,
        transcript=args.transcript,
        asr_model=args.asr_model,
        language=args.language,
        min_seconds=args.min_seconds,
        max_seconds=args.max_seconds,
        max_cer=args.max_cer,
        device=args.device,
        on_bad=args.on_bad,
        min_dnsmos=args.min_dnsmos,
    )
    print(summary(report))
    print(
        f"wrote {Path(args.out) / 'metadata.csv'} and {Path(args.out) / REPORT_FILE}: "
        f"next, `axolotl-orpheus init {args.out}`"
    )


def add_segment(commands) -> None:
    parser = options.add_command(
        commands, "segment", "cut long recordings at pauses into transcribed clips: a dataset for init", segment
    )
    parser.add_argument(
        "recordings", nargs="+", metavar="RECORDING_OR_FOLDER", help="audio files, or folders searched for them"
    )
    parser.add_argument("--out", required=True, help="the dataset folder to write: clips, metadata.csv, the report")
    options.add_voice(parser, "the speaker column's value; default: --out's folder name")
    parser.add_argument(
        "--transcript",
        default=None,
        metavar="FILE_OR_FOLDER",
        help="the recording's known text (for several: a folder of RECORDING_NAME.txt): each clip keeps its share "
        "of it, found through the words the ASR heard; default: the ASR's text",
    )
    options.add_asr(parser)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="shorter clips are joined or dropped")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="longer speech is cut")
    options.add_max_cer(parser, "with --transcript, drop clips")
    parser.add_argument(
        "--min-dnsmos",
        type=float,
        default=None,
        metavar="OVRL",
        help="drop clips whose DNSMOS OVRL (1-5) is under this and write each kept clip's into metadata.csv (0: "
        "score, drop none; needs pip install 'axolotl-orpheus[quality]'); default: not scored",
    )
    options.add_device(parser, "the ASR and DNSMOS")
    parser.add_argument(
        "--on-bad",
        choices=["skip", "raise"],
        default="skip",
        help="a recording that cannot be read: report it and go on, or stop",
    )


def init(args: argparse.Namespace) -> None:
    from axolotl_orpheus.recordings import survey

    base_model, snac_model, settings = args.base_model, args.snac_model, ""
    if args.from_voice:  # continue from a shared voice: its model, SNAC and orpheus_* settings
        from axolotl_orpheus.share.config import continue_from

        if (base_model, snac_model) != (DEFAULT_BASE_MODEL, DEFAULT_SNAC_MODEL):
            raise UserError("--from sets the base and SNAC models: give --from, or --base-model and --snac-model")
        base_model, snac_model, settings = astuple(continue_from(args.from_voice))
    found = survey.survey(args.dataset)
    print(found.summary())
    for warning in found.warnings(args.sequence_len):
        print(f"warning: {warning}")
    if not found.speaker_column and not args.voice:
        print("note: no speaker column and no --voice: prompts are the text alone; --voice NAME names the voice")
    out = Path(args.out)
    out.write_text(
        survey.write_config(found, str(out), args.voice, base_model, snac_model, args.sequence_len) + settings
    )
    print(f"wrote {out}: run `axolotl preprocess {out}` then `axolotl train {out}`")


def add_init(commands) -> None:
    parser = options.add_command(commands, "init", "survey a raw audio dataset and write a finetune.yml for it", init)
    parser.add_argument("dataset", help=options.DATASET_HELP)
    options.add_voice(parser, "the speaker name for a dataset without a speaker column; default: prompts are text")
    parser.add_argument("--out", default="finetune.yml", help="the axolotl config to write")
    parser.add_argument("--base-model", default=DEFAULT_BASE_MODEL, help="the Orpheus model to fine-tune")
    parser.add_argument(
        "--from",
        dest="from_voice",
        default=None,
        metavar="VOICE_DIR_OR_HUB_ID",
        help="continue from a shared voice (`axolotl-orpheus share`): its model, SNAC and orpheus_* settings",
    )
    options.add_snac_model(parser)
    parser.add_argument(
        "--sequence-len", type=int, default=DEFAULT_SEQUENCE_LEN, help="axolotl's sequence_len: the longest row"
    )


def check(args: argparse.Namespace) -> None:
    from axolotl_orpheus.recordings.check import check_dataset, summary_text, write_reports

    asr = None
    if not args.no_transcripts:
        from functools import partial

        from axolotl_orpheus.listen.asr import ASR

        asr = partial(ASR, args.asr_model, args.device, args.language)  # loaded once the dataset is open
    report = check_dataset(args.dataset, args.device, asr, args.max_cer)
    print(summary_text(report))
    print("wrote " + ", ".join(map(str, write_reports(report, Path(args.out)))))


def add_dataset_check(commands, name: str, help: str, run, *, rows: str, out: str, written: str, models: str):
    """A command that hears every clip of a dataset: the dataset, --max-cer, --out (a path without suffix), the ASR
    and the device."""
    parser = options.add_command(commands, name, help, run)
    parser.add_argument("dataset", help=options.DATASET_HELP)
    options.add_max_cer(parser, rows)
    parser.add_argument("--out", default=out, help=f"the reports' path without suffix: {written}")
    options.add_asr(parser)
    options.add_device(parser, models)
    return parser


def add_check(commands) -> None:
    help = "before training: each clip's audio quality (DNSMOS, peak, clipping) and its transcript's CER, worst first"
    parser = add_dataset_check(
        commands,
        "check",
        help,
        check,
        rows="count transcripts",
        out="dataset_check",
        written="OUT.csv, OUT.json, OUT.png",
        models="DNSMOS and the ASR",
    )
    parser.add_argument(
        "--no-transcripts", action="store_true", help="judge the audio only: no Whisper pass over the transcripts"
    )


def check_transcripts(args: argparse.Namespace) -> None:
    from axolotl_orpheus.listen.asr import ASR
    from axolotl_orpheus.recordings.transcripts import check_transcripts as check
    from axolotl_orpheus.recordings.transcripts import summary_text, write_report

    report = check(args.dataset, functools.partial(ASR, args.asr_model, args.device, args.language), args.max_cer)
    print(summary_text(report))
    print("wrote " + " and ".join(map(str, write_report(report, Path(args.out)))))


def add_check_transcripts(commands) -> None:
    help = "hear a dataset's clips with Whisper and list the rows whose transcript the audio does not say"
    add_dataset_check(
        commands,
        "check-transcripts",
        help,
        check_transcripts,
        rows="list rows",
        out="transcript_check",
        written="OUT.csv, OUT.json",
        models="the ASR",
    )


def report(args: argparse.Namespace) -> None:
    import json

    from axolotl_orpheus.prepare.report import REPORT_FILE, plot_report, report_table

    path = Path(args.prepared) / REPORT_FILE
    if not path.is_file():
        raise UserError(f"no {REPORT_FILE} in {args.prepared}: run `axolotl preprocess` with the Orpheus plugin")
    content = json.loads(path.read_text())
    print(report_table(content))
    png = plot_report(content, Path(args.out or Path(args.prepared) / "orpheus_report.png"))
    print(f"\nwrote {png}")


def add_report(commands) -> None:
    parser = options.add_command(
        commands, "report", "print what preprocessing kept and dropped, and why, and plot it to a PNG", report
    )
    options.add_prepared(parser)
    parser.add_argument("--out", default=None, help="the PNG to write; default: DIR/orpheus_report.png")


def cache(args: argparse.Namespace) -> None:
    from axolotl_orpheus.prepare import cache as codes_cache

    root = Path(args.folder) if args.folder else codes_cache.default_root()
    if args.delete_unused_for is not None:
        if args.delete_unused_for < 0:
            raise UserError("--delete-unused-for takes a number of days, 0 or more")
        deleted, freed = codes_cache.delete_unused(root, args.delete_unused_for)
        print(
            f"deleted the codes of {codes_cache.plural(deleted, 'clip')} unused for {args.delete_unused_for:g} "
            f"days ({freed / 1e6:.1f} MB)"
        )
    print(codes_cache.listing(root))


def add_cache(commands) -> None:
    parser = options.add_command(
        commands, "cache", "list the SNAC codes cache's namespaces; delete codes that went unused", cache
    )
    parser.add_argument(
        "folder", nargs="?", help="the cache folder; default: HF_DATASETS_CACHE/orpheus_codes (orpheus_codes_cache)"
    )
    parser.add_argument(
        "--delete-unused-for",
        type=float,
        metavar="DAYS",
        help="delete entries neither written nor read for DAYS days, then namespaces left empty",
    )
