"""Memory of a long-running writer: the allocator, the cyclic collector, trimming."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
from collections.abc import Iterator

import pyarrow as pa


def tune_process(arenas: int = 2) -> None:
    """Process-wide allocator settings of a command, set once at its start.

    glibc gives each thread that allocates its own heap (Delta's and Arrow's native threads,
    our merge thread), and memory freed in one heap is not reused by another: the backfill's
    peak RSS crept to ~600 MB. Two heaps: ~540 MB, same speed (measured). The memory-pool
    variable only acts if pyarrow has not chosen its pool yet (``python -m ecom_stream`` sets
    it before any import); ``use_system_allocator`` sets the pool either way."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    m_arena_max = -8  # from <malloc.h>
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(m_arena_max, arenas)


def use_system_allocator() -> None:
    """Arrow's default mimalloc pool keeps freed micro-batch memory: RSS crept up ~200 MB
    over a backfill. The system allocator (trimmed between micro-batches) gives it back."""
    pa.set_memory_pool(pa.system_memory_pool())


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while files are processed.

    Records and frames hold no reference cycles, but a micro-batch allocates millions of
    objects, and each automatic collection re-scans all that are alive: 1.6 s of a 10.6 s
    backfill of 300k orders. Cycles (Great Expectations makes some) are collected by
    ``release_memory`` after large micro-batches and every 50 micro-batches.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def release_memory() -> None:
    """Hand freed memory back to the OS between micro-batches, so that a long backfill or a
    daemon running for weeks keeps a flat footprint (allocators otherwise hold on to peaks)."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class LongLived:
    """Moves the objects alive after the first validation out of the collector's sight, once."""

    def __init__(self) -> None:
        self._frozen = False

    def freeze(self) -> None:
        if not self._frozen:
            # Great Expectations leaves ~1M long-lived objects after its first run; moving them
            # out of the collector's sight keeps every later collection cheap.
            gc.collect()
            gc.freeze()
            self._frozen = True
