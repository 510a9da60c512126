"""`axolotl-orpheus serve`: a trained voice behind OpenAI's speech API, with a listening page."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from pathlib import Path

from axolotl_orpheus.cli import options
from axolotl_orpheus.errors import UserError

API_KEY_VARIABLE = "ORPHEUS_API_KEY"
DEFAULT_MAX_CONCURRENT = 8
DEFAULT_MAX_QUEUE = 32
DEFAULT_MAX_INPUT_CHARS = 4000


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_args(args: argparse.Namespace) -> str | None:
    """The API key to require (or None), refusing a public address without one unless --no-auth says so."""
    key = args.api_key or os.environ.get(API_KEY_VARIABLE) or None
    if key is None and not is_loopback(args.host) and not args.no_auth:
        raise UserError(
            f"--host {args.host} lets other machines in, and no key is set. To fix: give --api-key KEY (or set "
            f"{API_KEY_VARIABLE}), or --no-auth to serve without one on purpose"
        )
    for name in ("max_concurrent", "max_input_chars", "port"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1; got {getattr(args, name)}")
    if args.max_queue < 0:
        raise UserError(f"--max-queue must be 0 or more; got {args.max_queue}")
    return key


def model_id(model: str) -> str:
    """The id clients send as `model`: a local folder's name, else the hub id as given."""
    path = Path(model)
    return path.resolve().name if path.is_dir() else model


def serve(args: argparse.Namespace) -> None:
    key = check_args(args)
    import uvicorn

    from axolotl_orpheus import codec
    from axolotl_orpheus.listen.voice import load_voice
    from axolotl_orpheus.serve.app import Service, create_app
    from axolotl_orpheus.serve.speech import Speaker

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    voice = load_voice(args.model, args.device)
    speaker = Speaker(voice, codec.load_snac(args.snac_model, args.device), args.max_concurrent)
    speaker.warm_up()
    service = Service(
        speaker,
        args.served_model_name or model_id(args.model),
        api_key=key,
        max_concurrent=args.max_concurrent,
        max_queue=args.max_queue,
        max_input_chars=args.max_input_chars,
    )
    print(f"serving {service.model_id} on http://{args.host}:{args.port}/ (the page) and /v1/audio/speech")
    try:
        # Streams still open at shutdown are cut after a few seconds rather than waited for.
        uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5)
    finally:
        speaker.close()


def add_serve(commands) -> None:
    parser = options.add_command(
        commands,
        "serve",
        "serve a trained voice over OpenAI's speech API, streaming as it speaks, with a listening page",
        serve,
    )
    options.add_model(parser)
    options.add_snac_model(parser)
    parser.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on; any other than loopback needs a key"
    )
    parser.add_argument("--port", type=int, default=8000, help="the port to listen on")
    options.add_device(parser)
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"require `Authorization: Bearer KEY` on the API; default: ${API_KEY_VARIABLE}, else no key",
    )
    parser.add_argument("--no-auth", action="store_true", help="serve a non-loopback --host without a key, on purpose")
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=DEFAULT_MAX_CONCURRENT,
        help="requests spoken at once, their sentence pieces batched through one generate",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULT_MAX_QUEUE,
        help="requests waiting for a slot beyond those; any more are answered 503 with Retry-After",
    )
    parser.add_argument(
        "--max-input-chars", type=int, default=DEFAULT_MAX_INPUT_CHARS, help="the longest input text a request may send"
    )
    parser.add_argument(
        "--served-model-name",
        default=None,
        help="the model id clients send and /v1/models lists; default: the --model folder's name, or the hub id",
    )
