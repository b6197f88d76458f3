"""Micro-batching: requests that arrive together share one `predict_many` call.

The event loop only appends to a bounded queue (a lock held for microseconds) and awaits a
future; one worker thread owns the model. It waits for a first request, then up to `max_wait_ms`
for more (up to `max_batch_size`, same task), runs the batch, and hands each result back to the
loop that asked with `call_soon_threadsafe`. A full queue refuses at once (`QueueFullError`) so
that overload shows up as quick 503s instead of a queue that grows without limit. When a batch
fails, each of its requests is run again alone, so only the one that fails by itself hears of it
(as a `RecognitionError` naming the cause).
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


@dataclass
class _Job:
    image: Image.Image
    task: str
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


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
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def queued(self) -> int:
        """Requests waiting (not yet in a running batch)."""
        return len(self._jobs)

    async def submit(self, image: Image.Image, task: str = "html") -> Any:
        """Queue one image and wait for its `Prediction`. Raises QueueFullError at once when the
        queue is full; cancelling the await (a timeout) drops the job if it has not started."""
        loop = asyncio.get_running_loop()
        job = _Job(image, task, loop.create_future(), loop)
        with self._cond:
            if self._closed or self._thread is None:
                raise TabVLMError("the batcher is not running")
            if len(self._jobs) >= self.config.max_queue:
                raise QueueFullError(f"the queue is full ({self.config.max_queue} requests waiting)")
            self._jobs.append(job)
            self._cond.notify()
        return await job.future

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
            # one task per batch (one prompt per generate call); others wait for the next round
            task = self._jobs[0].task
            batch: list[_Job] = []
            rest: deque[_Job] = deque()
            while self._jobs:
                job = self._jobs.popleft()
                if job.future.cancelled():  # timed out while waiting: no work for it
                    continue
                (batch if job.task == task and len(batch) < cfg.max_batch_size else rest).append(job)
            self._jobs.extendleft(reversed(rest))
            return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            if batch:
                self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        """Predict a batch and resolve its jobs; when it fails, each job alone (a bad image fails
        only its own request)."""
        t0 = time.perf_counter()
        try:
            preds = self.recognizer.predict_many(
                [j.image for j in batch], batch_size=len(batch), task=batch[0].task
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

    try:
        job.loop.call_soon_threadsafe(done)
    except RuntimeError:  # that loop is closed: nobody is waiting any more
        pass
