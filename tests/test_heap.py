"""heap: freed C-heap pages go back to the OS; cached programs are dropped; compile_step
compiles once, computes what the jitted step does and never retraces."""

import ctypes

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vice_gan import heap, train

needs_malloc_trim = pytest.mark.skipif(
    heap._malloc_trim() is None, reason="libc without malloc_trim (not glibc)"
)


@needs_malloc_trim
def test_release_free_memory_returns_freed_heap_pages():
    # 96 MiB in 48 KiB blocks (below glibc's mmap threshold, so they come from the heap); all
    # but the last are freed, which keeps the heap's top in use: glibc's automatic trimming
    # (top of the heap only) cannot return them, malloc_trim can.
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, count = 48 * 1024, 2048
    blocks = []
    for _ in range(count):
        p = libc.malloc(size)
        ctypes.memset(p, 1, size)  # touch every page: resident
        blocks.append(p)
    for p in blocks[:-1]:
        libc.free(p)
    before = heap.current_rss_mb()
    released = heap.release_free_memory()
    after = heap.current_rss_mb()
    libc.free(blocks[-1])
    assert released
    assert before - after > 64, (before, after)


def test_current_rss_mb_is_plausible():
    rss = heap.current_rss_mb()
    assert 10 < rss < 64 * 1024


def test_peak_rss_mb_is_at_least_the_current_and_in_mib():
    # getrusage reports KiB on Linux: a wrong unit would be off by 1024 from /proc's reading.
    current, peak = heap.current_rss_mb(), heap.peak_rss_mb()
    assert current - 1 <= peak < 8 * current


def test_release_cached_programs_keeps_arrays():
    f = jax.jit(lambda x: x * 2)
    x = jnp.arange(4.0)
    y = f(x)
    assert f._cache_size() == 1
    heap.release_cached_programs()
    assert f._cache_size() == 0
    np.testing.assert_array_equal(np.asarray(y), [0.0, 2.0, 4.0, 6.0])
    np.testing.assert_array_equal(np.asarray(f(x)), np.asarray(y))


def test_compile_step_equals_jitted_step_and_never_retraces():
    traces = []

    def step(state, batch):
        traces.append(1)
        return state + batch["x"].sum(), {"loss": batch["x"].mean()}

    jitted = jax.jit(step)
    state = jnp.float32(1.0)
    batch = {"x": jnp.arange(6.0).reshape(2, 3)}
    compiled = train.compile_step(jitted, state, batch)
    assert len(traces) == 1
    new_state, metrics = compiled(state, batch)
    want_state, want_metrics = step(state, batch)
    assert float(new_state) == float(want_state) == 16.0
    assert float(metrics["loss"]) == float(want_metrics["loss"])
    compiled(new_state, {"x": batch["x"] + 1})  # other values, same shapes: no new trace
    assert len(traces) == 2  # the call of `step` itself above, none by the compiled step
    with pytest.raises(TypeError):
        compiled(state, {"x": jnp.zeros((3, 3))})  # another shape: an error, no recompile
