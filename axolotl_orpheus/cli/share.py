"""`axolotl-orpheus share`: a trained voice made into a folder anyone can load, judge, reproduce and build on."""

from __future__ import annotations

import argparse
from pathlib import Path

from axolotl_orpheus.cli import options


def share(args: argparse.Namespace) -> None:
    from axolotl_orpheus.share.folder import ShareOptions, share_voice

    shared = share_voice(
        ShareOptions(
            source=Path(args.checkpoint),
            out=Path(args.out),
            config=Path(args.config) if args.config else None,
            merge=args.merge,
            scores=Path(args.scores) if args.scores else None,
            prepared=Path(args.prepared) if args.prepared else None,
            samples=args.samples,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            snac_model=args.snac_model,
            device=args.device,
            license=args.license,
            consent=args.consent,
            language=args.language or [],
            push_to_hub=args.push_to_hub,
            private=args.private,
            overwrite=args.overwrite,
        )
    )
    for warning in shared.warnings:
        print(f"warning: {warning}")
    print(
        f"wrote {shared.folder} ({shared.kind} model from {shared.checkpoint}); read its README.md before you publish"
    )
    if shared.url:
        print(f"pushed to {shared.url}")


def add_share(commands) -> None:
    from axolotl_orpheus.share import DEFAULT_SAMPLES

    parser = options.add_command(
        commands,
        "share",
        "make a publishable voice folder: model, stop token, card, config, samples, scores; push it to the hub",
        share,
    )
    parser.add_argument(
        "checkpoint",
        metavar="OUTPUT_DIR_OR_CHECKPOINT",
        help="axolotl's output_dir (its final model, else its best or newest checkpoint) or a checkpoint-N folder",
    )
    parser.add_argument("--out", required=True, metavar="VOICE_DIR", help="the voice folder to write")
    parser.add_argument(
        "--config",
        default=None,
        help="the finetune.yml it was trained on, published without secrets; default: none, and nobody can "
        "reproduce the voice",
    )
    parser.add_argument(
        "--merge", action="store_true", help="merge a LoRA adapter into its base, for engines that cannot apply one"
    )
    parser.add_argument(
        "--scores",
        default=None,
        metavar="EVALUATE_OUT",
        help="the --out folder of `evaluate` on this checkpoint; default: the training's best eval_orpheus_* scores",
    )
    options.add_prepared(
        parser,
        required=False,
        help="the prepared dataset it was trained on, for a checkpoint without orpheus_report.json; default: the "
        "checkpoint's",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=DEFAULT_SAMPLES,
        metavar="N",
        help="samples to speak with the shared model (orpheus_sample_prompts, else sentences of ours); 0: none",
    )
    options.add_generation(parser, per="sample", sampling=False)
    parser.add_argument(
        "--snac-model",
        default=None,
        help="the SNAC 24 kHz codec the voice file names, for its loaders and the samples; default: the one it "
        "trained with",
    )
    options.add_device(parser, "the samples")
    parser.add_argument(
        "--license", default=None, metavar="ID", help="the hub's licence id, e.g. apache-2.0; default: not stated"
    )
    parser.add_argument(
        "--consent",
        default=None,
        metavar="TEXT",
        help="the speakers' consent, in a sentence for the card; default: the card says none was given",
    )
    parser.add_argument(
        "--language",
        nargs="*",
        default=None,
        metavar="CODE",
        help="the languages it speaks, e.g. en, for the card; default: orpheus_eval_language, else none",
    )
    parser.add_argument(
        "--push-to-hub", default=None, metavar="OWNER/NAME", help="upload the folder to this hub model repository"
    )
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: a private repository")
    parser.add_argument("--overwrite", action="store_true", help="replace a VOICE_DIR that is not empty")
