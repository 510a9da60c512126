"""One generation worker for every request: the pieces being spoken share one `generate` call, frames stream out.

A request submits one sentence piece at a time as a `Job`. The worker thread batches every job it holds into one
`speak.generate_tokens` call (a round), with each row's own seed, sampling settings and token budget, and hands
each row's frames to its job as they are completed. A row stops at end_of_speech, at its budget, or when its
client has gone. A job that arrives during a round joins at the next frame boundary: the round stops there and
the next one resumes every unfinished row from its prompt and the frames it already has (a prefill), with its
own random generator, so a row never waits for the others to finish.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from axolotl_orpheus import layout
from axolotl_orpheus.listen import speak
from axolotl_orpheus.listen.voice import Sampling

LOG = logging.getLogger(__name__)


@dataclass
class End:
    """The last item a job delivers: whether the model said end_of_speech (else its budget ran out)."""

    stopped: bool


@dataclass
class Job:
    """One sentence piece to speak: its prompt ids, sampling, and where its frames go.

    `deliver` is called from the worker thread with each frame (1, 7), then an End, or an exception.
    """

    prompt: list[int]
    seed: int
    sampling: Sampling
    deliver: Callable[[np.ndarray | End | BaseException], None]
    cancelled: bool = False  # set by the request's side when its client has gone
    tokens: list[int] = field(default_factory=list)  # whole frames generated so far
    partial: list[int] = field(default_factory=list)  # the frame being generated
    done: bool = False
    generator: torch.Generator | None = None

    @property
    def budget(self) -> int:
        """Tokens it may still generate, in whole frames."""
        wanted = self.sampling.max_new_tokens
        return wanted - wanted % layout.TOKENS_PER_FRAME - len(self.tokens)

    def take(self, token: int) -> None:
        """One generated token: a frame is delivered once whole; end_of_speech or the budget ends the job."""
        if token == layout.END_OF_SPEECH:
            self.finish(stopped=True)
            return
        self.partial.append(token)
        if len(self.partial) == layout.TOKENS_PER_FRAME:
            self.tokens += self.partial
            self.deliver(np.array([self.partial], dtype=np.int64))
            self.partial = []
            if self.budget <= 0:
                self.finish(stopped=False)

    def finish(self, stopped: bool) -> None:
        self.done = True
        self.deliver(End(stopped))


class _RoundStreamer(BaseStreamer):
    """Each step's tokens to the round's jobs (transformers calls put with the prompts first, then each step)."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs, self.prompts_seen = jobs, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompts_seen:
            self.prompts_seen = True
            return
        for job, token in zip(self.jobs, value.tolist()):
            if not job.done and not job.cancelled:
                job.take(token)

    def end(self) -> None:
        pass


class _RoundStops(StoppingCriteria):
    """Rows that are done or whose client has gone; every row at a frame boundary when a job waits to join."""

    def __init__(self, engine: Engine, jobs: list[Job], width: int) -> None:
        self.engine, self.jobs, self.width = engine, jobs, width

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.width
        stops = [job.done or job.cancelled for job in self.jobs]
        if generated % layout.TOKENS_PER_FRAME == 0 and self.engine.has_joiners(len(self.jobs) - sum(stops)):
            stops = [True] * len(self.jobs)
        return torch.tensor(stops, device=input_ids.device)


class Engine:
    """The worker thread that speaks every job, up to `max_batch` rows in one batch."""

    def __init__(self, model, max_batch: int) -> None:
        self.model, self.max_batch = model, max_batch
        self.device = next(model.parameters()).device
        self.lock = threading.Condition()
        self.waiting: list[Job] = []
        self.closed = False
        self.rounds = 0  # generate calls made, for /health and the tests
        self.rows = 0  # rows those calls held, summed
        self.generating = 0  # rows being generated now
        self.thread = threading.Thread(target=self._run, name="orpheus-generation", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self.lock:
            self.waiting.append(job)
            self.lock.notify()

    def has_joiners(self, running: int) -> bool:
        """Whether a job waits that the batch has room for."""
        with self.lock:
            return any(not job.cancelled for job in self.waiting) and running < self.max_batch

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        active: list[Job] = []
        while True:
            with self.lock:
                while not self.waiting and not active and not self.closed:
                    self.lock.wait()
                if self.closed:
                    return
                room = self.max_batch - len(active)
                active += self.waiting[:room]
                del self.waiting[:room]
            active = [job for job in active if not job.cancelled]
            self.generating = len(active)
            if active:
                self._round(active)
            active = [job for job in active if not (job.done or job.cancelled)]
            self.generating = len(active)

    def _round(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.generator is None:
                job.generator = torch.Generator(self.device).manual_seed(job.seed)
        prompts = [job.prompt + job.tokens for job in jobs]
        width = max(len(prompt) for prompt in prompts)
        started = time.perf_counter()
        try:
            speak.generate_tokens(
                self.model,
                prompts,
                [job.generator for job in jobs],
                max(job.budget for job in jobs),
                temperature=[job.sampling.temperature for job in jobs],
                top_p=[job.sampling.top_p for job in jobs],
                repetition_penalty=[job.sampling.repetition_penalty for job in jobs],
                resumed=[bool(job.tokens) for job in jobs],
                streamer=_RoundStreamer(jobs),
                stopping_criteria=[_RoundStops(self, jobs, width)],
            )
        except Exception as error:  # the jobs' requests report it; the worker goes on with the next ones
            LOG.exception("generation failed")
            for job in jobs:
                if not job.done:
                    job.done = True
                    job.deliver(error)
            return
        finally:
            self.rounds += 1
            self.rows += len(jobs)
        for job in jobs:
            job.partial = []  # a round stopped for joiners stops on a frame boundary: nothing is lost
        LOG.debug("round of %d rows in %.2f s", len(jobs), time.perf_counter() - started)
