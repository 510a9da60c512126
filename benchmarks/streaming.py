"""Streaming decoding against canopy's, and `serve` under load.

    python benchmarks/streaming.py [--seconds 60] [--snac-model ID_OR_FOLDER] [--requests 16] [--threads N]

decoder: the same codes, a stream of --seconds of frames (the bundled speech encoded by SNAC, repeated), arrive
  one frame at a time and are decoded by the same SNAC in two ways:
  canopy: as canopy's orpheus_tts/decoder.py behaves: at every 7th token from the 28th on, the last 28 tokens (4
      frames) are decoded and the second frame's 2048 samples kept (the first frame and the last two are never
      played); SNAC's own decode, noise on, as canopy calls it;
  ours: codec.streaming.StreamingDecoder, noise drawn per position, as `serve` runs it.
  For each: audio seconds decoded per second (and ours / canopy's), decode calls, tokens before the first audio.
  Then both again with SNAC's noise off, against one whole decode of the stream (noise off): the largest sample
  difference at chunk boundaries (64 samples either side of each seam) and anywhere.
server: `axolotl-orpheus serve` in its own process with the stand-in tiny model, --requests concurrent requests
  of one sentence each (raw PCM, streamed), once with every request in one batch (--max-concurrent N) and once
  one at a time (--max-concurrent 1): every answer's status, p50/p95 time to the first audio byte and to the
  last, requests per second.

SNAC defaults to the offline stand-in (the real architecture, random weights): the real model's speed is the
same per sample, its audio is not. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import torch

from axolotl_orpheus import codec, layout
from axolotl_orpheus.cli.demo import STANDINS_CACHE
from axolotl_orpheus.codec.streaming import PositionalNoise, StreamingDecoder, decode_frames
from segment_speed import bundled_speech, machine

CANOPY_WINDOW = 4  # frames: the last 28 tokens
SEAM = 64  # samples either side of a chunk boundary


def speech_frames(snac, seconds: float) -> np.ndarray:
    """Frames (n, 7) of `seconds` of speech: the bundled clips encoded once, repeated."""
    clips = [clip for _, clip in bundled_speech()]
    (codes,) = codec.encode(snac, [np.concatenate(clips)])
    frames = layout.interleave(*codes)
    count = round(seconds * 24000 / layout.SAMPLES_PER_FRAME)
    return np.concatenate([frames] * (count // len(frames) + 1))[:count]


def canopy_stream(snac, frames: np.ndarray, noise: bool) -> tuple[list[np.ndarray], int, int, int]:
    """Canopy's decoding of a stream: a 4-frame window at each new frame from the 4th on, its second frame kept."""
    chunks = []
    for end in range(CANOPY_WINDOW, len(frames) + 1):
        window = frames[end - CANOPY_WINDOW : end]
        if noise:
            levels = [torch.as_tensor(level)[None] for level in layout.deinterleave(window)]
            with torch.inference_mode():
                audio = snac.decode(levels)[0, 0].numpy()
        else:
            audio = decode_frames(snac, window)
        chunks.append(audio[layout.SAMPLES_PER_FRAME : 2 * layout.SAMPLES_PER_FRAME])
    return chunks, CANOPY_WINDOW, len(chunks), CANOPY_WINDOW * len(chunks)


def our_stream(snac, frames: np.ndarray, noise: bool) -> tuple[list[np.ndarray], int, int, int]:
    """codec.streaming's decoding, a frame pushed at a time; also the frames needed before the first audio, the
    decode calls and the frames they decoded."""
    decoder = StreamingDecoder(snac, PositionalNoise(0) if noise else None)
    chunks, first = [], None
    for count, frame in enumerate(frames, 1):
        chunks += decoder.push(frame[None])
        first = first or (count if chunks else None)
    return [*chunks, decoder.finish()], first, decoder.decodes, decoder.decoded_frames


def differences(chunks: list[np.ndarray], whole: np.ndarray, first_frame: int) -> dict:
    streamed = np.concatenate(chunks)
    start = first_frame * layout.SAMPLES_PER_FRAME
    reference = whole[start : start + len(streamed)]
    seams = np.cumsum([len(chunk) for chunk in chunks])[:-1]
    near = np.concatenate([np.arange(seam - SEAM, seam + SEAM) for seam in seams])
    difference = np.abs(streamed - reference)
    return {"max_difference_at_boundaries": float(difference[near].max()), "max_difference": float(difference.max())}


def decoder_figures(snac, frames: np.ndarray) -> dict:
    seconds = len(frames) * layout.SAMPLES_PER_FRAME / 24000
    whole = decode_frames(snac, frames)
    started = time.perf_counter()
    decode_frames(snac, frames, PositionalNoise(0))
    figures: dict = {
        "stream_seconds": round(seconds, 2),
        "whole_decode_audio_seconds_per_second": round(seconds / (time.perf_counter() - started), 3),
    }
    for name, stream, first_frame in (("ours", our_stream, 0), ("canopy", canopy_stream, 1)):
        started = time.perf_counter()
        chunks, frames_first, calls, decoded = stream(snac, frames, noise=True)
        elapsed = time.perf_counter() - started
        emitted = sum(len(chunk) for chunk in chunks) / 24000
        quiet, *_ = stream(snac, frames, noise=False)
        figures[name] = {
            "audio_seconds_per_second": round(emitted / elapsed, 3),
            "seconds": round(elapsed, 1),
            "audio_seconds_emitted": round(emitted, 2),
            "decode_calls": calls,
            # the work, whatever the machine's load: frames decoded per frame emitted, context included
            "frames_decoded_per_frame": round(decoded * layout.SAMPLES_PER_FRAME / 24000 / emitted, 3),
            "tokens_before_first_audio": layout.TOKENS_PER_FRAME * frames_first,
            **differences(quiet, whole, first_frame),
        }
    figures["ours_over_canopy"] = round(
        figures["ours"]["audio_seconds_per_second"] / figures["canopy"]["audio_seconds_per_second"], 2
    )
    return figures


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def timed_request(url: str, seed: int, max_new_tokens: int) -> dict:
    body = {"model": "orpheus-tiny", "input": "Hello, this is a test of the voice.", "response_format": "pcm"}
    body.update(seed=seed, max_new_tokens=max_new_tokens)
    started = time.perf_counter()
    first, size = None, 0
    with httpx.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=600) as response:
        for chunk in response.iter_raw():
            first = first or time.perf_counter() - started
            size += len(chunk)
    return {
        "status": response.status_code,
        "first_byte": first,
        "last_byte": time.perf_counter() - started,
        "bytes": size,
    }


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3)


def server_figures(standins: dict, snac_model: str, requests: int, max_new_tokens: int, concurrent: int) -> dict:
    port = free_port()
    command = [sys.executable, "-m", "axolotl_orpheus.cli.main", "serve", "--model", str(standins["model"])]
    command += ["--snac-model", snac_model, "--port", str(port), "--device", "cpu"]
    command += ["--max-concurrent", str(concurrent), "--max-queue", str(requests)]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"the server did not start:\n{log.read().decode()[-3000:]}")
                time.sleep(0.5)
            started = time.perf_counter()
            with ThreadPoolExecutor(requests) as pool:
                answers = list(pool.map(lambda seed: timed_request(url, seed, max_new_tokens), range(requests)))
            elapsed = time.perf_counter() - started
            health = httpx.get(f"{url}/health", timeout=5).json()
        finally:
            process.terminate()
            process.wait(timeout=60)
    firsts = [answer["first_byte"] for answer in answers if answer["first_byte"] is not None]
    lasts = [answer["last_byte"] for answer in answers]
    return {
        "max_concurrent": concurrent,
        "statuses": sorted({answer["status"] for answer in answers}),
        "answered_with_audio": sum(answer["status"] == 200 and answer["bytes"] > 0 for answer in answers),
        "first_byte_p50_s": percentile(firsts, 50),
        "first_byte_p95_s": percentile(firsts, 95),
        "last_byte_p50_s": percentile(lasts, 50),
        "last_byte_p95_s": percentile(lasts, 95),
        "requests_per_second": round(requests / elapsed, 2),
        "generate_calls": health["rounds"],
        "mean_rows_per_generate_call": round(health["rows"] / max(health["rounds"], 1), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="the length of the stream of frames")
    parser.add_argument("--snac-model", default=None, help="default: the offline stand-in SNAC (random weights)")
    parser.add_argument("--requests", type=int, default=16, help="concurrent requests to the server")
    parser.add_argument("--max-new-tokens", type=int, default=140, help="each request's token budget")
    parser.add_argument("--threads", type=int, default=None, help="torch threads; default: torch's own")
    parser.add_argument("--skip", choices=["decoder", "server"], default=None, help="leave one part out")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from axolotl_orpheus.cli.standins import build_standins

    standins = build_standins(STANDINS_CACHE / "standins")
    snac_model = args.snac_model or str(standins["snac"])
    figures: dict = {**machine(), "snac_model": snac_model}
    if args.skip != "decoder":
        snac = codec.load_snac(snac_model, "cpu")
        figures["decoder"] = decoder_figures(snac, speech_frames(snac, args.seconds))
        print(json.dumps(figures["decoder"]), flush=True)
    if args.skip != "server":
        figures["server"] = [
            server_figures(standins, snac_model, args.requests, args.max_new_tokens, concurrent)
            for concurrent in (args.requests, 1)
        ]
    figures["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
