"""The commands that hear a voice: evaluate checkpoints, speak text, decode a prepared row."""

from __future__ import annotations

import argparse
from pathlib import Path

from axolotl_orpheus.cli import options
from axolotl_orpheus.errors import UserError


def evaluate(args: argparse.Namespace) -> None:
    from axolotl_orpheus.listen.evaluation import evaluate_checkpoints, metrics_table, read_texts

    if (args.prepared is None) == (args.texts is None):
        raise UserError("give the rows to speak, either --prepared DIR or --texts FILE")
    texts = None
    if args.texts:
        texts = read_texts(Path(args.texts))
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


def add_evaluate(commands) -> None:
    parser = options.add_command(
        commands,
        "evaluate",
        "score checkpoints side by side: words heard back, speaker similarity, stopping, duration, loops",
        evaluate,
    )
    options.add_model(parser, repeat=True)
    options.add_prepared(parser, required=False, help="a prepared dataset folder: speak its first --rows rows")
    parser.add_argument("--rows", type=int, default=8, help="how many of the prepared rows to speak")
    parser.add_argument("--texts", default=None, metavar="FILE", help="or a text file to speak, one sentence a line")
    options.add_voice(parser, "the voice to speak --texts in; default: text-only prompts")
    parser.add_argument(
        "--reference",
        nargs="*",
        default=[],
        metavar="WAV",
        help="clips of the voice for --texts: one per text, or any number for the voice; default: none, no "
        "speaker similarity",
    )
    parser.add_argument("--out", required=True, help="the folder for metrics.json and each model's wavs")
    options.add_asr(parser, per="sample")
    options.add_speaker_model(parser)
    options.add_snac_model(parser)
    options.add_generation(parser, per="sample", sampling=False)
    options.add_device(parser)


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


def add_speak(commands) -> None:
    parser = options.add_command(commands, "speak", "speak text with a trained voice into a 24 kHz wav", speak)
    options.add_model(parser)
    parser.add_argument("--text", required=True, help="what to say; long text is spoken sentence by sentence")
    options.add_voice(parser, 'the voice, as in the "{voice}: {text}" prompts it was trained on; default: text only')
    parser.add_argument("--out", default="speech.wav", help="the wav to write")
    options.add_snac_model(parser)
    options.add_generation(parser, per="sentence piece")
    options.add_device(parser)


def decode(args: argparse.Namespace) -> None:
    from axolotl_orpheus.cli.demo import decode_row

    seconds = decode_row(Path(args.prepared), args.row, args.snac_model, Path(args.out), args.device)
    print(f"wrote {args.out} ({seconds:.2f} s at 24 kHz)")


def add_decode(commands) -> None:
    parser = options.add_command(
        commands, "decode", "decode one prepared row's audio tokens back to a 24 kHz wav, to hear the data", decode
    )
    options.add_prepared(parser)
    parser.add_argument("--row", type=int, default=0, help="the row's index")
    parser.add_argument("--out", default="row.wav", help="the wav to write")
    options.add_snac_model(parser)
    options.add_device(parser, "SNAC")
