"""The options several commands share, each with one name, one default and one help text everywhere."""

from __future__ import annotations

import argparse

from axolotl_orpheus.args import (
    DEFAULT_ASR_MODEL,
    DEFAULT_MAX_CER,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_REPETITION_PENALTY,
    DEFAULT_SNAC_MODEL,
    DEFAULT_SPEAKER_MODEL,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
)

DATASET_HELP = "a folder with metadata.csv (or metadata.jsonl), a csv/jsonl/parquet file, or a hub dataset id"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default after its help; an option without one says in its help what happens instead."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default is not None and action.default is not False and action.default != argparse.SUPPRESS
        if shown and not action.required and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def add_command(commands, name: str, help: str, run, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose `--help` shows every default; `run(args)` carries it out."""
    parser = commands.add_parser(name, help=help, description=description or help, formatter_class=HelpFormatter)
    parser.set_defaults(func=run)
    return parser


def add_device(parser: argparse.ArgumentParser, what: str = "the models") -> None:
    parser.add_argument(
        "--device", default=None, help=f"where {what} run, e.g. cpu or cuda:1; default: cuda, then mps, then cpu"
    )


def add_snac_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--snac-model", default=DEFAULT_SNAC_MODEL, help="the SNAC 24 kHz codec: a hub id or a local folder"
    )


def add_asr(parser: argparse.ArgumentParser, per: str = "clip") -> None:
    parser.add_argument(
        "--asr-model", default=DEFAULT_ASR_MODEL, help="the Whisper that hears the audio: a hub id or a local folder"
    )
    parser.add_argument("--language", default=None, help=f"the spoken language, e.g. en; default: detected per {per}")


def add_speaker_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--speaker-model",
        default=DEFAULT_SPEAKER_MODEL,
        help="the x-vector model that compares voices: a hub id or a local folder",
    )


def add_max_cer(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--max-cer",
        type=float,
        default=DEFAULT_MAX_CER,
        help=f"{what} whose heard text is further than this character error rate from its transcript",
    )


def add_prepared(
    parser: argparse.ArgumentParser,
    required: bool = True,
    help: str = "a prepared dataset folder: dataset_prepared_path/<hash>, as `axolotl preprocess` wrote it",
) -> None:
    parser.add_argument("--prepared", required=required, default=None, metavar="DIR", help=help)


def add_model(parser: argparse.ArgumentParser, repeat: bool = False) -> None:
    what = "a checkpoint or output folder, a LoRA adapter folder, a shared voice folder, or a hub id"
    if repeat:
        parser.add_argument("--model", required=True, action="append", help=f"{what}; repeat to compare several")
    else:
        parser.add_argument("--model", required=True, help=what)


def add_voice(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--voice", default=None, help=help)


def add_generation(parser: argparse.ArgumentParser, per: str, sampling: bool = True) -> None:
    """The token budget and seed, and with `sampling` Orpheus' sampling settings, defaulting to the reference's."""
    parser.add_argument(
        "--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help=f"token budget per {per}, 7 per frame"
    )
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same audio")
    if sampling:
        parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="sampling temperature")
        parser.add_argument("--top-p", type=float, default=DEFAULT_TOP_P, help="nucleus sampling's probability mass")
        parser.add_argument(
            "--repetition-penalty",
            type=float,
            default=DEFAULT_REPETITION_PENALTY,
            help="above 1 discourages repeating tokens; Orpheus needs at least 1.1",
        )
