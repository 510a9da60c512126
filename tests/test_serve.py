"""`axolotl-orpheus serve`: a real uvicorn server on 127.0.0.1 with the stand-in voice, driven by the `openai`
package, httpx and a headless Chromium. Every request is bounded in time; max_new_tokens stays small."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
import torch

from axolotl_orpheus import layout
from axolotl_orpheus.listen.voice import SPEAKER_PROMPT, Sampling, Voice, VoiceInfo, load_voice

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

KEY = "test-key-0123456789"
MODEL_ID = "my-voice"
VOICES = {"leo": {"clips": 3, "hours": 0.01}, "tara": {"clips": 3, "hours": 0.01}}
# What the voice folder's generation_config.json says, so the server's defaults are these, not the package's.
SAMPLING = {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.2, "max_new_tokens": 700}
SLOTS, QUEUE, MAX_CHARS = 2, 6, 600
TIMEOUT = 60  # seconds for any one request
FRAME = layout.SAMPLES_PER_FRAME
PAUSE = int(0.1 * 24000)
TEXT = "Hello there."
LONG_TEXT = " ".join(["This sentence is long enough that two of them make a piece."] * 4)  # 2 pieces


@dataclass
class Running:
    url: str
    service: object
    voice: Voice
    snac: object

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=TIMEOUT).json()


def wait_for(condition: Callable[[], bool], seconds: float = TIMEOUT) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def voice_folder(tmp_path_factory, standins) -> Path:
    """The stand-in model as a shared voice folder: two voices, and sampling defaults of its own."""
    folder = tmp_path_factory.mktemp("voices") / MODEL_ID
    folder.mkdir()
    for file in Path(standins["model"]).iterdir():
        if file.name != "generation_config.json":
            (folder / file.name).symlink_to(file)
    config = json.loads((Path(standins["model"]) / "generation_config.json").read_text())
    config.update(SAMPLING, eos_token_id=layout.END_OF_SPEECH, pad_token_id=layout.PAD, _from_model_config=False)
    (folder / "generation_config.json").write_text(json.dumps(config))
    VoiceInfo(voices=VOICES, prompt=SPEAKER_PROMPT).write(folder)
    return folder


@pytest.fixture(scope="module")
def server(voice_folder, snac_model):
    """The app under uvicorn in a thread of this process, on a free port of 127.0.0.1, for the module."""
    from axolotl_orpheus.serve.app import Service, create_app
    from axolotl_orpheus.serve.speech import Speaker

    voice = load_voice(str(voice_folder), "cpu")
    speaker = Speaker(voice, snac_model, max_batch=SLOTS)
    service = Service(speaker, MODEL_ID, api_key=KEY, max_concurrent=SLOTS, max_queue=QUEUE, max_input_chars=MAX_CHARS)
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(service), log_level="warning", timeout_graceful_shutdown=5)
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    wait_for(lambda: running.started)
    yield Running(f"http://127.0.0.1:{listening.getsockname()[1]}", service, voice, snac_model)
    running.should_exit = True
    thread.join(timeout=30)
    speaker.close()
    listening.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=TIMEOUT)


def body(**fields) -> dict:
    return {"model": MODEL_ID, "input": TEXT, "voice": "tara", "max_new_tokens": 28, **fields}


def post(server: Running, payload, key: str | None = KEY, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = payload if isinstance(payload, (str, bytes)) else json.dumps(payload)
    return httpx.post(f"{server.url}/v1/audio/speech", content=data, headers=headers, timeout=TIMEOUT, **kwargs)


def read_audio(data: bytes, format: str) -> tuple[np.ndarray, int]:
    if format == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32767, 24000
    with soundfile.SoundFile(io.BytesIO(data)) as file:
        assert file.channels == 1
        return file.read(dtype="float32"), file.samplerate


@pytest.mark.parametrize("format", ["wav", "pcm", "flac", "mp3", "opus"])
def test_each_format_is_24khz_mono_audio_of_whole_frames(client, format):
    response = client.audio.speech.create(
        model=MODEL_ID, input=TEXT, voice="tara", response_format=format, extra_body={"max_new_tokens": 28, "seed": 1}
    )
    audio, rate = read_audio(response.read(), format)
    assert rate == 24000
    if format == "mp3":  # LAME's delay and padding: up to two MP3 frames more
        assert 4 * FRAME <= len(audio) <= 4 * FRAME + 2 * 1152
    else:
        assert len(audio) == 4 * FRAME  # 28 tokens: 4 frames, the random model never says end_of_speech
    assert np.abs(audio).max() > 0


def test_the_speech_is_what_speak_makes(server, client):
    """The same prompt, constrained sampling, seeds per piece, pauses and SNAC noise as `speak`: alone, a request's
    audio is speak's, to the 16-bit step."""
    from axolotl_orpheus.listen.speak import speak

    response = client.audio.speech.create(
        model=MODEL_ID, input=LONG_TEXT, voice="tara", response_format="wav", extra_body={"max_new_tokens": 21}
    )
    served, _ = read_audio(response.read(), "wav")
    settings = {key: SAMPLING[key] for key in ("temperature", "top_p", "repetition_penalty")}
    spoken = speak(
        server.voice.model, server.voice.tokenizer, server.snac, LONG_TEXT, "tara", max_new_tokens=21, **settings
    )
    assert len(served) == len(spoken) == 2 * 3 * FRAME + PAUSE
    np.testing.assert_allclose(served, spoken, rtol=0, atol=1.5 / 32767)


def test_the_audio_streams_in_chunks_as_it_is_decoded(client):
    request = {"model": MODEL_ID, "input": TEXT, "voice": "leo", "response_format": "pcm"}
    extra = {"max_new_tokens": 70, "seed": 4}
    with client.audio.speech.with_streaming_response.create(**request, extra_body=extra) as response:
        assert response.headers["content-type"] == "audio/pcm"
        chunks = list(response.iter_bytes())
    assert len(chunks) >= 2  # 10 frames: the first after 4 frames, more after
    whole = client.audio.speech.create(**request, extra_body=extra).read()
    assert b"".join(chunks) == whole and len(whole) == 2 * 10 * FRAME  # the same seed, the same audio


def test_sse_events_carry_the_audio_and_the_usage(server, client):
    request = {"model": MODEL_ID, "input": TEXT, "voice": "leo", "response_format": "pcm"}
    extra = {"max_new_tokens": 35, "seed": 2}
    with client.audio.speech.with_streaming_response.create(**request, stream_format="sse", extra_body=extra) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[len("data: ") :]) for line in r.iter_lines() if line.startswith("data: ")]
    assert [event["type"] for event in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    audio = b"".join(base64.b64decode(event["audio"]) for event in events[:-1])
    assert audio == client.audio.speech.create(**request, extra_body=extra).read()
    prompt = server.service.speaker.prompts(TEXT, "leo")[0]
    assert events[-1] == {
        "type": "speech.audio.done",
        "usage": {"input_tokens": len(prompt), "output_tokens": 35, "total_tokens": len(prompt) + 35},
    }


BAD_REQUESTS = [
    ("input", {"input": ""}, "input must be the text"),
    ("input", {"input": "   "}, "input must be the text"),
    ("input", {"input": "a" * (MAX_CHARS + 1)}, f"at most {MAX_CHARS}"),
    ("input", {"input": 5}, "input must be the text"),
    ("voice", {"voice": "alloy"}, "['leo', 'tara']"),
    ("voice", {"voice": {"id": "nova"}}, "['leo', 'tara']"),
    ("voice", {"voice": 3}, "voice must be"),
    ("model", {"model": "tts-1"}, MODEL_ID),
    ("model", {"model": None}, MODEL_ID),
    ("response_format", {"response_format": "aac"}, "mp3, opus, flac, wav, pcm"),
    ("speed", {"speed": 1.5}, "only speed 1.0"),
    ("speed", {"speed": "fast"}, "must be a number"),
    ("stream_format", {"stream_format": "chunks"}, "audio, sse"),
    ("temperature", {"temperature": 0}, "above 0"),
    ("temperature", {"temperature": 2.5}, "at most 2"),
    ("top_p", {"top_p": 1.5}, "at most 1"),
    ("repetition_penalty", {"repetition_penalty": 0.9}, "at least 1"),
    ("repetition_penalty", {"repetition_penalty": True}, "must be a number"),
    ("seed", {"seed": -1}, "from 0"),
    ("seed", {"seed": 1.5}, "whole number"),
    ("max_new_tokens", {"max_new_tokens": 6}, "from 7"),
    ("max_new_tokens", {"max_new_tokens": 10**6}, "from 7 to"),
    ("instructions", {"instructions": ["be happy"]}, "instructions must be text"),
    ("path", {"path": "/etc/passwd"}, 'unknown parameter "path"'),
]


@pytest.mark.parametrize(
    "param, fields, message", BAD_REQUESTS, ids=[f"{p}={json.dumps(f[p])[:20]}" for p, f, _ in BAD_REQUESTS]
)
def test_a_bad_field_is_a_400_naming_it(server, param, fields, message):
    response = post(server, body(**fields))
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert message in error["message"]


@pytest.mark.parametrize("payload", ['{"model": ', "[1, 2]", b"\xff\xfe"], ids=["truncated", "a list", "not utf-8"])
def test_a_body_that_is_no_json_object_is_a_400(server, payload):
    response = post(server, payload)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_the_openai_client_sees_openais_error(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.audio.speech.create(model=MODEL_ID, input="Hi.", voice="alloy")
    assert raised.value.body["param"] == "voice"
    assert "unknown voice 'alloy'" in raised.value.body["message"]


def test_every_request_but_health_needs_the_key(server):
    assert post(server, body(), key=None).status_code == 401
    wrong = post(server, body(), key="not-the-key")
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    for path in ("/v1/models", "/v1/voices"):
        assert httpx.get(f"{server.url}{path}", timeout=TIMEOUT).status_code == 401
        basic = httpx.get(f"{server.url}{path}", headers={"Authorization": f"Basic {KEY}"}, timeout=TIMEOUT)
        assert basic.status_code == 401
    health = server.health()
    assert health["status"] == "ok" and health["auth"] is True
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()


def test_the_model_its_voices_and_its_sampling_defaults_are_listed(server, client):
    assert [model.id for model in client.models.list()] == [MODEL_ID]
    voices = httpx.get(f"{server.url}/v1/voices", headers={"Authorization": f"Bearer {KEY}"}, timeout=TIMEOUT).json()
    assert [voice["id"] for voice in voices["data"]] == ["leo", "tara"] and voices["prompt"] == "speaker"
    assert voices["sampling"] == {**SAMPLING, "seed": 0}  # from the folder's generation_config.json


def test_unknown_paths_and_methods_get_openais_error_shape(server):
    missing = httpx.get(f"{server.url}/v1/nothing", timeout=TIMEOUT)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert httpx.get(f"{server.url}/v1/audio/speech", timeout=TIMEOUT).status_code == 405
    assert httpx.get(f"{server.url}/?name=../../errors.py", timeout=TIMEOUT).text.startswith("<!doctype html>")


def test_eight_concurrent_clients_are_all_served(server, client):
    rounds, rows = server.service.speaker.engine.rounds, server.service.speaker.engine.rows

    def speak(seed: int) -> int:
        response = client.audio.speech.create(
            model=MODEL_ID,
            input=TEXT,
            voice="leo",
            response_format="wav",
            extra_body={"max_new_tokens": 14, "seed": seed},
        )
        return len(read_audio(response.read(), "wav")[0])

    with ThreadPoolExecutor(8) as pool:
        lengths = list(pool.map(speak, range(8), timeout=3 * TIMEOUT))
    assert lengths == [2 * FRAME] * 8
    engine = server.service.speaker.engine
    assert engine.rows - rows > engine.rounds - rounds  # some rounds held several requests' rows
    assert server.health()["speaking"] == server.health()["waiting"] == 0


def test_a_full_queue_is_a_503_and_a_closed_stream_frees_its_slot(server):
    """SLOTS requests speak and QUEUE wait; the next is told 503 at once. Closing a stream mid-way stops its
    generation and lets a waiting request speak; closing them all leaves nothing generating."""
    long = body(max_new_tokens=2800, response_format="pcm")
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(timeout=TIMEOUT) as http:
        opened = [
            http.stream("POST", f"{server.url}/v1/audio/speech", json={**long, "seed": i}, headers=headers)
            for i in range(SLOTS + QUEUE)
        ]
        responses = []
        try:
            for stream in opened:
                responses.append(stream.__enter__())  # its headers come at once, even while it waits
            assert all(response.status_code == 200 for response in responses)
            wait_for(lambda: (server.health()["speaking"], server.health()["waiting"]) == (SLOTS, QUEUE))
            started = time.monotonic()
            busy = post(server, body())
            assert busy.status_code == 503 and time.monotonic() - started < 5
            assert busy.headers["Retry-After"].isdigit() and busy.json()["error"]["code"] == "server_busy"

            reading = [response.iter_raw() for response in responses]  # dropping an iterator closes its stream
            assert next(reading[0])  # mid-stream
            opened[0].__exit__(None, None, None)
            assert next(reading[SLOTS])  # the first waiting one now speaks
            wait_for(lambda: (server.health()["speaking"], server.health()["waiting"]) == (SLOTS, QUEUE - 1))
        finally:
            for stream in opened[1:]:
                stream.__exit__(None, None, None)
    wait_for(
        lambda: (
            server.health() | {"rounds": 0, "rows": 0}
            == {"status": "ok", "auth": True, "speaking": 0, "waiting": 0, "generating": 0, "rounds": 0, "rows": 0}
        )
    )
    assert post(server, body()).status_code == 200


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are not installed")
def test_the_page_lists_the_voices_and_plays_a_request(server):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(TIMEOUT)
    wait = WebDriverWait(driver, TIMEOUT)
    try:
        driver.get(f"{server.url}/")
        wait.until(lambda d: d.find_element(By.ID, "key-row").is_displayed())  # the server asks for its key
        driver.find_element(By.ID, "key").send_keys(KEY)
        driver.find_element(By.ID, "connect").click()
        wait.until(lambda d: d.find_element(By.ID, "play").is_enabled())
        assert [option.text for option in Select(driver.find_element(By.ID, "voice")).options] == ["leo", "tara"]
        assert driver.find_element(By.ID, "model").text == MODEL_ID
        assert driver.find_element(By.ID, "temperature").get_attribute("value") == str(SAMPLING["temperature"])
        tokens = driver.find_element(By.ID, "max_new_tokens")
        tokens.clear()
        tokens.send_keys("35")
        driver.find_element(By.ID, "play").click()
        wait.until(lambda d: d.find_element(By.ID, "download").is_displayed())
        status = driver.find_element(By.ID, "status").text
        assert status.startswith("Done"), status
        assert driver.find_element(By.ID, "download").get_attribute("data-samples") == str(5 * FRAME)
        assert driver.find_element(By.ID, "download").get_attribute("href").startswith("blob:")
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()


def test_a_public_address_without_a_key_refuses_to_start(monkeypatch, capsys):
    from axolotl_orpheus.cli.main import main

    monkeypatch.delenv("ORPHEUS_API_KEY", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--model", "nowhere", "--host", "0.0.0.0"])
    assert exited.value.code == 2
    assert "--api-key" in capsys.readouterr().err


def test_serve_help_shows_every_option_and_its_default(capsys):
    from axolotl_orpheus.cli.main import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for option in ("--model", "--snac-model", "--device", "--api-key", "--no-auth", "--served-model-name"):
        assert option in shown
    for option, default in [
        ("--host", "127.0.0.1"),
        ("--port", "8000"),
        ("--max-concurrent", "8"),
        ("--max-queue", "32"),
        ("--max-input-chars", "4000"),
    ]:
        assert option in shown and f"(default: {default})" in shown


def test_a_voice_samples_as_its_generation_config_says_else_as_the_package_does(server, standins):
    assert server.voice.sampling == Sampling(**SAMPLING)
    from transformers import GenerationConfig

    # The stand-in's generation_config.json, as save_pretrained wrote it, sets no sampling: the package's defaults.
    assert Sampling.of(GenerationConfig.from_pretrained(standins["model"])) == Sampling()
    assert server.voice.voices == ["leo", "tara"] and server.voice.prompt_voice("leo") == "leo"
    assert Voice(None, None, None).prompt_voice("anyone") == "anyone"  # nothing says: as written


def test_a_resumed_row_may_stop_at_once_and_a_new_one_may_not():
    from axolotl_orpheus.listen.speak import FrameConstraint

    constraint = FrameConstraint(5, 156940, resumed=[True, False])
    allowed = torch.isfinite(constraint(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 156940)))
    assert allowed[0, layout.END_OF_SPEECH] and not allowed[1, layout.END_OF_SPEECH]
    assert torch.equal(allowed[0, : layout.END_OF_SPEECH], allowed[1, : layout.END_OF_SPEECH])  # codebook 0 both


def test_a_job_joins_a_running_batch_at_a_frame_boundary(server):
    """A second piece arriving while the first generates joins it at the next frame boundary (the batch restarts
    from both rows' frames); each gets whole frames up to its own budget."""
    from axolotl_orpheus.listen.speak import generate_frames, speech_prompt_ids
    from axolotl_orpheus.listen.voice import Sampling
    from axolotl_orpheus.serve.engine import End, Engine, Job

    model, tokenizer = server.voice.model, server.voice.tokenizer
    prompts = [speech_prompt_ids(tokenizer, text, "tara") for text in ("A first piece to say.", "A second.")]
    got: dict[int, list] = {0: [], 1: []}
    ended = {0: threading.Event(), 1: threading.Event()}
    engine = Engine(model, max_batch=2)
    second = Job(prompts[1], 4, Sampling(max_new_tokens=35), lambda item: take(1, item))

    def take(row: int, item) -> None:
        got[row].append(item)
        if row == 0 and len(got[0]) == 2:  # called in the worker, mid-round: the second arrives now
            engine.submit(second)
        if isinstance(item, (End, BaseException)):
            ended[row].set()

    try:
        engine.submit(Job(prompts[0], 3, Sampling(max_new_tokens=70), lambda item: take(0, item)))
        assert ended[0].wait(TIMEOUT) and ended[1].wait(TIMEOUT)
    finally:
        engine.close()
    assert (engine.rounds, engine.rows) == (2, 3)  # the first alone, then both
    assert got[0][-1] == got[1][-1] == End(stopped=False)  # the random model never says end_of_speech
    first, joined = np.concatenate(got[0][:-1]), np.concatenate(got[1][:-1])
    assert first.shape == (10, 7) and joined.shape == (5, 7)
    for frames in (first, joined):
        assert ((frames >= layout.FRAME_OFFSETS) & (frames < layout.FRAME_OFFSETS + layout.CODEBOOK_SIZE)).all()
    alone = generate_frames(model, prompts[:1], [3], max_new_tokens=14)[0].frames
    np.testing.assert_array_equal(first[:2], alone)  # before the join it ran alone
