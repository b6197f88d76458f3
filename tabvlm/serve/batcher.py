"""Micro-batching: requests that arrive together share one `predict_many` call.

The event loop only appends to a bounded queue (a lock held for microseconds) and awaits a
future; one worker thread owns the model. It waits for a first request, then up to `max_wait_ms`
for more (up to `max_batch_size`, same task and token cap), runs the batch, and hands each
result back to the loop that asked with `call_soon_threadsafe`. A full queue refuses at once (`QueueFullError`) so
that overload shows up as quick 503s instead of a queue that grows without limit. When a batch
fails, each of its requests is run again alone, so only the one that fails by itself hears of it
(as a `RecognitionError` naming the cause). A request whose await is cancelled (a timeout) leaves
the queue at once; one already in a batch runs to its end. `submit(..., released=future)` tells
its caller when the batcher holds the image no longer (the server keeps a layout model's
reader-sized page inside its memory bound until then: `tabvlm.serve.limits`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from PIL import Image

from tabvlm.errors import ConfigError, TabVLMError

logger = logging.getLogger(__name__)


class QueueFullError(TabVLMError):
    """The request queue holds `max_queue` requests already (HTTP 503)."""


class RecognitionError(TabVLMError):
    """The model failed on this request's image (HTTP 500 for that request only)."""


@dataclass
class BatchConfig:
    """How requests are grouped. `max_batch_size=1` turns batching off."""

    max_batch_size: int = 8
    max_wait_ms: float = 10.0  # how long a batch waits for company after its first request
    max_queue: int = 64  # waiting requests (not counting the batch running); more -> 503

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_queue < 1 or self.max_wait_ms < 0:
            raise ConfigError(
                "batching: expected max_batch_size >= 1, max_queue >= 1, max_wait_ms >= 0; found "
                f"{self.max_batch_size}, {self.max_queue}, {self.max_wait_ms}"
            )


@dataclass(eq=False)  # a job is itself: the queue finds and removes it by identity
class _Job:
    image: Image.Image | None  # None once the batcher is done with it
    task: str
    max_new_tokens: int | None  # None: the recognizer's own
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    released: asyncio.Future | None = None  # set once `image` is let go

    @property
    def kind(self) -> tuple[str, int | None]:
        """What a batch shares: one prompt and one token cap per generate call."""
        return self.task, self.max_new_tokens


class Batcher:
    """Queue + worker thread in front of a `TableRecognizer` (anything with `predict_many`)."""

    def __init__(self, recognizer: Any, config: BatchConfig | None = None):
        self.recognizer = recognizer
        self.config = config or BatchConfig()
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches_run = 0  # how many predict_many calls (tests and logs read it)

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        with self._cond:
            if self._thread is not None:
                return
            self._closed = False
            self._thread = threading.Thread(target=self._work, name="tabvlm-batcher", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking requests, fail the waiting ones, and join the worker."""
        with self._cond:
            self._closed = True
            pending = list(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
        for job in pending:
            _resolve(job, error=TabVLMError("the server is shutting down"))
            _let_go(job)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def queued(self) -> int:
        """Requests waiting (not yet in a running batch)."""
        return len(self._jobs)

    async def submit(
        self,
        image: Image.Image,
        task: str = "html",
        max_new_tokens: int | None = None,
        released: asyncio.Future | None = None,
    ) -> Any:
        """Queue one image and wait for its `Prediction` (`max_new_tokens`: a lower cap than the
        recognizer's). Raises QueueFullError at once when the queue is full; cancelling the await
        (a timeout) takes the job out of the queue if it has not started. `released` (a future of
        this loop), when given, gets its result once the batcher holds `image` no longer: the
        job refused, taken out, or its batch done (whatever its request's fate)."""
        loop = asyncio.get_running_loop()
        job = _Job(image, task, max_new_tokens, loop.create_future(), loop, released)
        with self._cond:
            refused = (
                TabVLMError("the batcher is not running")
                if self._closed or self._thread is None
                else QueueFullError(f"the queue is full ({self.config.max_queue} requests waiting)")
                if len(self._jobs) >= self.config.max_queue
                else None
            )
            if refused is None:
                self._jobs.append(job)
                self._cond.notify()
        if refused is not None:
            _let_go(job)
            raise refused
        try:
            return await job.future
        except asyncio.CancelledError:
            with self._cond:
                queued = any(j is job for j in self._jobs)
                if queued:
                    self._jobs.remove(job)
            if queued:  # else a batch holds it, and lets it go when done
                _let_go(job)
            raise

    def _next_batch(self) -> list[_Job] | None:
        """Block until a batch is ready: the first job, then whatever joins within the wait."""
        cfg = self.config
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            deadline = time.monotonic() + cfg.max_wait_ms / 1000
            while len(self._jobs) < cfg.max_batch_size and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if not self._jobs:  # every job was cancelled (taken out by `submit`) meanwhile
                return []
            # one kind per batch (one prompt, one cap per generate call); others wait for the next round
            kind = self._jobs[0].kind
            batch: list[_Job] = []
            rest: deque[_Job] = deque()
            while self._jobs:
                job = self._jobs.popleft()
                if job.future.cancelled():  # timed out while waiting: no work for it
                    _let_go(job)
                    continue
                (batch if job.kind == kind and len(batch) < cfg.max_batch_size else rest).append(job)
            self._jobs.extendleft(reversed(rest))
            return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            if batch:
                self._run(batch)
                for job in batch:  # retries included: the batch's images are free now
                    _let_go(job)

    def _run(self, batch: list[_Job]) -> None:
        """Predict a batch and resolve its jobs; when it fails, each job alone (a bad image fails
        only its own request)."""
        t0 = time.perf_counter()
        task, max_new_tokens = batch[0].kind
        kwargs = {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}
        try:
            preds = self.recognizer.predict_many(
                [j.image for j in batch], batch_size=len(batch), task=task, **kwargs
            )
        except Exception as e:  # noqa: BLE001 (any failure: find the request it belongs to)
            if len(batch) > 1:
                logger.warning(
                    "batch of %d failed (%s: %s); retrying each request alone",
                    len(batch),
                    type(e).__name__,
                    e,
                )
                for job in batch:
                    if not job.future.cancelled():
                        self._run([job])
                return
            logger.exception("request failed")
            error = (
                e
                if isinstance(e, TabVLMError)
                else RecognitionError(f"recognition failed ({type(e).__name__}: {e})")
            )
            _resolve(batch[0], error=error)
            return
        self.batches_run += 1
        logger.debug("batch of %d in %.3f s", len(batch), time.perf_counter() - t0)
        for job, pred in zip(batch, preds, strict=True):
            _resolve(job, result=pred)


def _resolve(job: _Job, result: Any = None, error: BaseException | None = None) -> None:
    """Complete a job's future on its own loop (futures are not thread-safe)."""

    def done() -> None:
        if job.future.done():  # cancelled by a timeout meanwhile
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    _on_loop(job.loop, done)


def _let_go(job: _Job) -> None:
    """The batcher is done with the job's image: drop it, and set `released` (on its loop)."""
    job.image = None
    released = job.released
    if released is not None:
        _on_loop(job.loop, lambda: released.done() or released.set_result(None))


def _on_loop(loop: asyncio.AbstractEventLoop, fn: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn)
    except RuntimeError:  # that loop is closed: nobody is waiting any more
        pass
