"""Giving memory back between a run's stages: JAX's cached programs and the C heap's free pages.

Compiling a train step, XLA and LLVM allocate hundreds of MiB that they free again before the
step runs, but glibc keeps most of those pages (in the middle of its heaps and in its
per-thread arenas) instead of returning them. The step's buffers then come on top of that
memory, so the process's peak is about the compiler's high-water mark plus everything the step
needs. Trimming the heap between compiling and running releases those pages, and the peak
becomes the larger of the two (BENCHMARKS.md, "Memory").

Initialising the states compiles many small programs (each network's init, eager array
operations) that a training loop never runs again; XLA:CPU keeps each one's machine code in
JAX's caches.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import resource
from collections.abc import Callable

import jax


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """libc's malloc_trim, or None where there is none (macOS, musl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Returns the heap's free pages to the OS; True if any were released.

    A no-op (False) where libc has no malloc_trim. It frees nothing that is in use, so it is
    always safe; it costs a walk over the heap (milliseconds), so call it after rare events
    such as compiling, not every step.
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def release_cached_programs() -> None:
    """Drops every program JAX has compiled or traced so far, then `release_free_memory`.

    For the start of a training loop: whatever was compiled before it (the states'
    initialisation, an earlier stage of the same run) is not run again, or is recompiled
    once if it is. Arrays are untouched.
    """
    jax.clear_caches()
    gc.collect()
    release_free_memory()


def current_rss_mb() -> float:
    """This process's resident memory now, in MiB (Linux: /proc/self/statm), NaN elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (getrusage; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
