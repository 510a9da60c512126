"""`axolotl-orpheus serve`: a trained voice behind OpenAI's speech API, streaming, with a listening page.

- `engine`: one generation worker that batches every request's current sentence piece, frames streamed out;
- `speech`: a request's text, piece by piece, from frames to streamed audio (codec.streaming) in its format;
- `formats`: wav, pcm, flac, mp3 and opus written as the audio arrives, and OpenAI's SSE events;
- `app`: the HTTP API (FastAPI), its checks, errors, key, queue and the page in `page/`.
"""
