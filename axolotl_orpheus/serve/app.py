"""The HTTP side: OpenAI's speech API and its errors, the key, the bounded queue, the listening page.

Every request body is checked field by field before any audio is made, and a bad one is answered with OpenAI's
error shape naming the field; nothing a request sends names a file. Requests speak concurrently up to
`max_concurrent`; up to `max_queue` more wait for a slot; any more are told 503 with Retry-After at once. A
response streams from the first audio on, and a client that goes away stops its generation and frees its slot.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from importlib import resources

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from axolotl_orpheus.errors import UserError
from axolotl_orpheus.listen.voice import TEXT_PROMPT, Sampling
from axolotl_orpheus.serve.formats import FORMATS, MEDIA_TYPES, SSE_MEDIA_TYPE, sse_delta, sse_done
from axolotl_orpheus.serve.speech import Speaker, SpeechSettings, Usage

MAX_BODY_BYTES = 1 << 20
# How long a client told the server is busy should wait before trying again, in seconds.
RETRY_AFTER = 2
MAX_TEMPERATURE = 2.0
MAX_REPETITION_PENALTY = 2.0
MAX_SEED = 2**32 - 1
# The page and its script, package data of axolotl_orpheus.serve.
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/page.js": ("page.js", "text/javascript")}
# The page runs only its own script and talks only to this server.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; media-src 'self' blob:; "
    "img-src 'self' data:"
)
OPTIONAL_FIELDS = {"voice", "response_format", "speed", "stream_format", "instructions"}
SAMPLING_FIELDS = {"temperature", "top_p", "repetition_penalty", "seed", "max_new_tokens"}


class ApiError(Exception):
    """An answer in OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers

    def response(self) -> JSONResponse:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, status_code=self.status, headers=self.headers)


def invalid(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param, code)


@dataclass(frozen=True)
class SpeechRequest:
    prompts: list[list[int]]
    settings: SpeechSettings
    format: str
    sse: bool


def _number(body: dict, name: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid(name, f"{name} must be a number; got {json.dumps(value)}")
    if value < low or (low_open and value == low) or value > high:
        bounds = f"{'above' if low_open else 'at least'} {low:g} and at most {high:g}"
        raise invalid(name, f"{name} must be {bounds}; got {value:g}")
    return float(value)


def _integer(body: dict, name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, f"{name} must be a whole number; got {json.dumps(value)}")
    if not low <= value <= high:
        raise invalid(name, f"{name} must be from {low} to {high}; got {value}")
    return value


def _choice(body: dict, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = body.get(name, default)
    if value not in choices:
        raise invalid(name, f"{name} {json.dumps(value)} is not supported; use one of {', '.join(choices)}")
    return value


class Service:
    """What the endpoints share: the speaker, the model's id, the limits, the queue and the key."""

    def __init__(
        self,
        speaker: Speaker,
        model_id: str,
        api_key: str | None = None,
        max_concurrent: int = 4,
        max_queue: int = 16,
        max_input_chars: int = 4000,
    ) -> None:
        self.speaker, self.model_id, self.api_key = speaker, model_id, api_key
        self.max_concurrent, self.max_queue, self.max_input_chars = max_concurrent, max_queue, max_input_chars
        self.created = int(time.time())
        self.admitted = 0  # requests speaking or waiting for a slot
        self.speaking = 0
        self.slots: anyio.Semaphore | None = None  # made in the server's event loop

    def check_key(self, request: Request) -> None:
        if self.api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(401, "missing API key: send the header `Authorization: Bearer KEY`", code="invalid_api_key")
        if not hmac.compare_digest(given.strip().encode(), self.api_key.encode()):
            raise ApiError(401, "incorrect API key", code="invalid_api_key")

    def parse(self, body: object) -> SpeechRequest:
        """A speech request's body checked field by field, as OpenAI's API takes it plus Orpheus' sampling."""
        if not isinstance(body, dict):
            raise invalid(None, "the body must be a JSON object", "invalid_json")
        for name in body:
            if name not in {"model", "input"} | OPTIONAL_FIELDS | SAMPLING_FIELDS:
                raise invalid(name, f"unknown parameter {json.dumps(name)}", "unknown_parameter")
        model = body.get("model")
        if model != self.model_id:
            raise invalid("model", f"unknown model {json.dumps(model)}; this server has {json.dumps(self.model_id)}")
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise invalid("input", "input must be the text to speak; got none")
        if len(text) > self.max_input_chars:
            raise invalid(
                "input", f"input is {len(text)} characters; at most {self.max_input_chars}", "string_above_max_length"
            )
        if not isinstance(body.get("instructions", ""), str):
            raise invalid("instructions", "instructions must be text")
        voice = body.get("voice")
        if isinstance(voice, dict):
            voice = voice.get("id")
        if voice is not None and not (isinstance(voice, str) and voice.strip()):
            raise invalid("voice", "voice must be a voice's name, or an object with its id")
        try:
            voice = self.speaker.voice.prompt_voice(voice)
        except UserError as error:
            raise invalid("voice", str(error)) from None
        format = _choice(body, "response_format", "mp3", FORMATS)
        sse = _choice(body, "stream_format", "audio", ("audio", "sse")) == "sse"
        if _number(body, "speed", 1.0, 0.25, 4.0) != 1.0:
            raise invalid("speed", "only speed 1.0 is supported: Orpheus speaks at the pace it was trained on")
        defaults = self.speaker.voice.sampling
        temperature = _number(body, "temperature", defaults.temperature, 0.0, MAX_TEMPERATURE, low_open=True)
        top_p = _number(body, "top_p", defaults.top_p, 0.0, 1.0, low_open=True)
        penalty = _number(body, "repetition_penalty", defaults.repetition_penalty, 1.0, MAX_REPETITION_PENALTY)
        seed = _integer(body, "seed", 0, 0, MAX_SEED)
        prompts = self.speaker.prompts(text, voice)
        if not prompts:
            raise invalid("input", "input must be the text to speak; got none")
        positions = self.speaker.voice.model.config.max_position_embeddings
        room = positions - max(len(prompt) for prompt in prompts)
        max_new_tokens = _integer(body, "max_new_tokens", min(defaults.max_new_tokens, room), 7, room)
        settings = SpeechSettings(seed, Sampling(temperature, top_p, penalty, max_new_tokens))
        return SpeechRequest(prompts, settings, format, sse)

    def admit(self) -> Callable[[], None]:
        """A place among the admitted requests (the speaking and the waiting), or 503 when all are taken; returns
        what gives it back."""
        if self.admitted >= self.max_concurrent + self.max_queue:
            raise ApiError(
                503,
                f"the server is busy ({self.max_concurrent} speaking, {self.max_queue} waiting); try again shortly",
                code="server_busy",
                type="server_error",
                headers={"Retry-After": str(RETRY_AFTER)},
            )
        self.admitted += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.admitted -= 1

        return release

    async def stream(self, request: SpeechRequest, release: Callable[[], None]) -> AsyncIterator[bytes]:
        """The response body: waits for a speaking slot, then the audio or its SSE events."""
        if self.slots is None:
            self.slots = anyio.Semaphore(self.max_concurrent)
        try:
            async with self.slots:
                self.speaking += 1
                try:
                    usage = Usage()
                    audio = self.speaker.encoded(request.prompts, request.settings, request.format, usage)
                    async with contextlib.aclosing(audio):
                        async for data in audio:
                            yield sse_delta(data) if request.sse else data
                    if request.sse:
                        yield sse_done(usage.input_tokens, usage.output_tokens)
                finally:
                    self.speaking -= 1
        finally:
            release()


class SpeechResponse(StreamingResponse):
    """A stream that stops as soon as its client goes, whatever the ASGI version, and always closes its body.

    Starlette stops a stream on a disconnect only at its next write under ASGI 2.4; a request still waiting for
    its slot or its first audio writes nothing, so its slot would stay taken.
    """

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None], **kwargs) -> None:
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    with contextlib.suppress(OSError):  # the client went while a chunk was sent
                        await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            await self.body_iterator.aclose()
            self.on_close()


async def _json_body(request: Request) -> object:
    if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
        raise ApiError(413, f"the body is over {MAX_BODY_BYTES} bytes", code="body_too_large")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"the body is over {MAX_BODY_BYTES} bytes", code="body_too_large")
    try:
        return json.loads(body)
    except ValueError as error:
        raise invalid(None, f"the body is not valid JSON: {error}", "invalid_json") from None


def _page(name: str, media_type: str) -> Callable[[], Response]:
    """A route serving one fixed file of the page: it takes no parameter, so no request names a file."""

    def page() -> Response:
        content = (resources.files("axolotl_orpheus.serve") / "page" / name).read_bytes()
        return Response(content, media_type=media_type, headers={"Content-Security-Policy": PAGE_POLICY})

    return page


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="axolotl-orpheus", docs_url=None, redoc_url=None, openapi_url=None)
    voice = service.speaker.voice

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error.response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return ApiError(
            error.status_code, str(error.detail), code="not_found" if error.status_code == 404 else None
        ).response()

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "auth": service.api_key is not None,
            "speaking": service.speaking,
            "waiting": service.admitted - service.speaking,
            "generating": service.speaker.engine.generating,
            "rounds": service.speaker.engine.rounds,
            "rows": service.speaker.engine.rows,
        }

    for path, (name, media_type) in PAGE_FILES.items():
        app.add_api_route(path, _page(name, media_type), methods=["GET"], include_in_schema=False)

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        service.check_key(request)
        entry = {"id": service.model_id, "object": "model", "created": service.created, "owned_by": "axolotl-orpheus"}
        return {"object": "list", "data": [entry]}

    @app.get("/v1/voices")
    async def voices(request: Request) -> dict:
        service.check_key(request)
        known = voice.info.voices if voice.info else {}
        prompt = "unknown" if voice.info is None else "text" if voice.info.prompt == TEXT_PROMPT else "speaker"
        return {
            "object": "list",
            "data": [{"id": name, "object": "voice", **known[name]} for name in voice.voices],
            # "speaker": the voice names above; "text": no voice; "unknown": any name is used as written.
            "prompt": prompt,
            "sampling": {**asdict(voice.sampling), "seed": 0},
        }

    @app.post("/v1/audio/speech")
    async def speech(request: Request) -> Response:
        service.check_key(request)
        parsed = service.parse(await _json_body(request))
        release = service.admit()
        media_type = SSE_MEDIA_TYPE if parsed.sse else MEDIA_TYPES[parsed.format]
        return SpeechResponse(
            service.stream(parsed, release),
            on_close=release,
            media_type=media_type,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app
