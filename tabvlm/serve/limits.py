"""Admission: how much request data the server holds at once, and every wait inside a deadline.

A request body (or a web UI upload) is read only once the request holds one of `max_bodies` body
slots; until then it stays in the client's socket (uvicorn stops reading a connection once 64 KiB
of its body wait unread). A request that finds `max_waiting` others already waiting for a body
slot is refused at once (503, Retry-After). Parsing the body and decoding its image run in a
worker thread that holds one of `decode_workers` decode slots, and the image leaves that thread
shrunk: to the model's input, or to the reader's `max_side` when the reader is to see it (the OCR
task; every task of a layout model, which reads each page's words before its model runs). A
table request of a VLM gives its body slot back then: its image is a model-sized one in the
batcher's queue. A reader-sized image keeps its request's body slot until the work is done with
it: an OCR request's until the reader (one image at a time, in the one reader slot) is done, a
layout model's until the batcher lets its page go (its batch done, or, after a timeout, taken out
of the queue). At most `max_read_waiting` (half of `max_bodies`) requests wait for the reader
slot; the next is refused (503), so slow reads cannot hold every body slot. So, whatever the
number of clients, the request data in memory at once is at most

    max_bodies x max(9/8 x body_limit, 4 x max_side^2)    bodies read, reader-sized images
  + decode_workers x (max_image_bytes + D x max_pixels)  images being decoded
  + the readers' working memory                           one for OCR; a layout model's, one more
  + (max_bodies + max_waiting) x 320 KiB                  what uvicorn reads of unread bodies

(`memory_bound`), where D is the bytes a pixel takes while an image decodes (measured: 12), a
bytearray over-allocates by up to 1/8 as it grows, and a reader-sized RGB image takes 4 bytes a
pixel. A layout model reads its pages' words in the batcher's worker, one page at a time, while
the reader slot may be reading for an OCR request: two readers at once at most.

Connections: only a request waiting for, or holding, a body slot has body bytes in uvicorn's
buffer. A request answered before its body is read (503, 413, ...) holds none, though its
connection stays open: uvicorn does not close it, but reads the rest of the body as it comes and
drops it, then keeps the connection alive for the next request. Left out of the bound: a client
that pipelines a second request behind one waiting for the model leaves one socket read (up to
256 KiB) in uvicorn's buffer beside it, and the web UI's overlay picture (a layout model's words
and cells drawn on a copy of the page, `tabvlm.serve.ui`) is drawn after its request's slot is
given back, then saved by Gradio.

Every wait (for a body slot, a decode slot, the decoding, the reader, the model) ends at the
request's deadline with a 504. Work cut short by the deadline cannot be stopped (it runs in a
thread), so it keeps its slots until it ends: the bound holds for work the server has given up on
too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tabvlm.serve.inputs import InputError, body_limit

T = TypeVar("T")

# Bytes a pixel takes at the peak of `load_image` + `resize_to_fit`: RGBA decoded, composited on a
# white canvas, made RGB (PIL keeps RGB in 4 bytes) and shrunk; a 25 Mpx RGBA PNG peaked at
# 293 MB above the bytes it came from (2026-12-04, docs/BENCHMARKS.md)
DECODE_BYTES_PER_PIXEL = 12
# Blocks this large or larger go back to the system when freed (`release_large_blocks`)
MMAP_THRESHOLD = 8 * 2**20
# What uvicorn holds of a body nobody reads yet: it stops reading past 64 KiB, and one socket
# read brings up to 256 KiB
CONNECTION_BYTES = (64 + 256) * 1024


def max_read_waiting(max_bodies: int) -> int:
    """Requests that may wait for the reader slot (each holding a body slot): half the slots."""
    return max(1, max_bodies // 2)


def memory_bound(
    max_bodies: int,
    decode_workers: int,
    max_image_bytes: int,
    max_pixels: int,
    read_side: int,
    max_waiting: int,
    reader_bytes: int = 0,
) -> int:
    """Bytes of request data a server with these limits holds at most above its idle memory (the
    module docstring's formula; `max_waiting`: requests that may wait for a body slot, the
    server's `max_queue`; `reader_bytes`: the readers' working memory, when a reader is used)."""
    body = max(body_limit(max_image_bytes) * 9 // 8, 4 * read_side**2)
    decode = max_image_bytes + DECODE_BYTES_PER_PIXEL * max_pixels
    connections = max_bodies + max_waiting
    return max_bodies * body + decode_workers * decode + reader_bytes + connections * CONNECTION_BYTES


def release_large_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """Have glibc's malloc give blocks of `threshold` bytes or more back to the system as soon as
    they are freed (`mallopt(M_MMAP_THRESHOLD)`). By default it raises that threshold to the
    largest block freed so far (up to 32 MiB), so freed request bodies and decode buffers stay in
    its heaps and the process's RSS creeps above `memory_bound` (by ~40 MB over 12 uploads here)
    and stays at its peak. For a serving process (`tabvlm serve` calls it): process-wide. False
    where the C library has no mallopt (not glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.mallopt(-3, threshold) == 1  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


class BodySlot:
    """A held body slot; released when the request is done with its body, or, when a decode
    thread is still working on that body, when the thread ends."""

    def __init__(self, slots: asyncio.Semaphore):
        self._slots = slots
        self._work: asyncio.Future | None = None

    def hold_until(self, work: asyncio.Future) -> None:
        self._work = work

    def release(self) -> None:
        if self._work is not None and not self._work.done():
            self._work.add_done_callback(lambda _: self._slots.release())
        else:
            self._slots.release()


class Admission:
    """The body, decode and reader slots of one server; made inside its event loop (the lifespan),
    closed at its end. Decodes and reads run on threads of their own, as many as their slots: the
    C allocator keeps some memory per thread that did a large allocation, so few threads keep the
    memory they hold near what their slots allow."""

    def __init__(self, max_bodies: int, decode_workers: int, max_waiting: int, timeout_s: float):
        self.bodies = asyncio.Semaphore(max_bodies)
        self.decodes = asyncio.Semaphore(decode_workers)
        self.reads = asyncio.Semaphore(1)  # the reader engine runs one image at a time anyway
        self.max_waiting = max_waiting
        self.max_read_waiting = max_read_waiting(max_bodies)
        self.timeout_s = timeout_s
        self.waiting = 0  # requests waiting for a body slot
        self.read_waiting = 0  # requests waiting for the reader slot (each holds a body slot)
        self._pools = {
            self.decodes: ThreadPoolExecutor(decode_workers, thread_name_prefix="tabvlm-decode"),
            self.reads: ThreadPoolExecutor(1, thread_name_prefix="tabvlm-read"),
        }

    def close(self) -> None:
        """Let the threads go once their work (abandoned work included) is done."""
        for pool in self._pools.values():
            pool.shutdown(wait=False)

    def deadline(self) -> float:
        """The event loop time at which a request arriving now gets its 504."""
        return asyncio.get_running_loop().time() + self.timeout_s

    async def within(self, deadline: float, work: Awaitable[T], what: str) -> T:
        """`await work`, or 504 at `deadline` (`what` says what was being waited for)."""
        timeout = asyncio.timeout_at(deadline)
        try:
            async with timeout:
                return await work
        except TimeoutError as e:
            if not timeout.expired():  # raised by the work itself
                raise
            raise InputError(
                504, f"no answer within the request timeout of {self.timeout_s} s ({what})"
            ) from e

    @contextlib.asynccontextmanager
    async def body_slot(self, deadline: float) -> AsyncIterator[BodySlot]:
        """Hold a body slot for the block: wait for one until `deadline` (504), or 503 at once when
        `max_waiting` requests are waiting already."""
        if self.bodies.locked() and self.waiting >= self.max_waiting:
            raise InputError(
                503, f"server busy: {self.waiting} requests are waiting to be read; retry shortly"
            )
        self.waiting += 1
        try:
            await self.within(deadline, self.bodies.acquire(), "waiting for its turn to be read")
        finally:
            self.waiting -= 1
        slot = BodySlot(self.bodies)
        try:
            yield slot
        finally:
            slot.release()

    async def decode(
        self, deadline: float, fn: Callable[..., T], *args: Any, slot: BodySlot | None = None
    ) -> T:
        """`fn(*args)` in a worker thread holding a decode slot (and keeping `slot`, the body's, until
        the thread ends), within `deadline`."""
        what = "decoding the image"
        await self.within(deadline, self.decodes.acquire(), f"waiting to start {what}")
        return await self._in_thread(self.decodes, deadline, fn, args, slot, what)

    async def read(
        self, deadline: float, fn: Callable[..., T], *args: Any, slot: BodySlot | None = None
    ) -> T:
        """`fn(*args)` (the reader) in a worker thread holding the reader slot, as `decode`; 503
        at once when `max_read_waiting` requests are waiting for that slot already."""
        if self.reads.locked() and self.read_waiting >= self.max_read_waiting:
            raise InputError(
                503, f"server busy: {self.read_waiting} requests are waiting for the reader; retry shortly"
            )
        what = "reading the text"
        self.read_waiting += 1
        try:
            await self.within(deadline, self.reads.acquire(), f"waiting to start {what}")
        finally:
            self.read_waiting -= 1
        return await self._in_thread(self.reads, deadline, fn, args, slot, what)

    async def _in_thread(
        self,
        slots: asyncio.Semaphore,
        deadline: float,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        slot: BodySlot | None,
        what: str,
    ) -> T:
        """`fn(*args)` on `slots`' threads, `slots` held (acquired by the caller) until it ends."""
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._pools[slots], functools.partial(fn, *args))

        def done(work: asyncio.Future) -> None:
            slots.release()
            if not work.cancelled():
                work.exception()  # retrieved: a failure after its request's 504 has nobody to tell

        work.add_done_callback(done)
        if slot is not None:
            slot.hold_until(work)
        return await self.within(deadline, asyncio.shield(work), what)
