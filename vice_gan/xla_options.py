"""XLA compiler options of vice-gan's train steps (jax.jit's `compiler_options`, per program).

`xla_cpu_use_fusion_emitters=False`: XLA:CPU generates the element-wise loops around the
matrix products (pads, slices, transposes, BatchNorm arithmetic) with its older LLVM IR
emitters instead of its MLIR fusion emitters. On the whole GAN step (2-core AVX2 CPU,
BENCHMARKS.md, "XLA:CPU's loop emitters") it compiles with about half the memory at every
width measured (and ~6 s faster at ngf = ndf = 16), and runs steps as fast at widths 16 and 32
(at 64 two measurements disagreed within the machine's spread). Only the CPU backend knows the
option, so other backends get none.

`--xla_cpu_enable_concurrency_optimized_scheduler=false` (process-wide, in XLA_FLAGS): XLA:CPU
orders each program's operations depth-first (its memory-minimising scheduler) instead of
breadth-first (its default, which keeps more independent operations in flight at the price of
more live buffers). XLA's scratch for the whole GAN step drops by 92 / 123 / 126 MiB at
ngf = ndf = 16 / 32 / 64 and the process's peak by 60-87 / 58-68 / 30 MiB, at step times
within the machine's spread (BENCHMARKS.md, "Memory: depth-first schedule"). XLA:CPU reads
this option from XLA_FLAGS only (as a jit `compiler_options` entry it changes nothing), and
only when JAX starts its CPU backend: `import vice_gan` sets it (`set_process_flags`), so it
holds wherever vice-gan is imported before JAX first computes anything.

An option named in the user's XLA_FLAGS is left to XLA_FLAGS (`--xla_cpu_use_fusion_emitters=
true` brings the MLIR emitters back, `--xla_cpu_enable_concurrency_optimized_scheduler=true`
the breadth-first schedule, e.g. to compare).

`use_compilation_cache`: JAX's persistent compilation cache, so that XLA's compilation of a
program (the GAN step's: about 20 of its 25-30 s at ngf = ndf = 16 on a 2-core CPU; JAX's
tracing, the rest, still runs) is read back from disk by the next run with the same shapes and
flags (a resumed job, a rerun) in about 1 s (BENCHMARKS.md, "Compile time"). The entry is XLA's
own executable for the same program, so results do not depend on it; XLA:CPU refuses an entry
compiled for other CPU features and compiles afresh.
"""

from __future__ import annotations

import logging as std_logging
import os
from collections.abc import MutableMapping

from absl import logging

from vice_gan import user_cache

CPU_STEP_OPTIONS: dict[str, bool] = {"xla_cpu_use_fusion_emitters": False}
PROCESS_FLAGS: dict[str, str] = {"xla_cpu_enable_concurrency_optimized_scheduler": "false"}


def _named(xla_flags: str) -> set[str]:
    """Names of the flags in an XLA_FLAGS string ('--name=value' or '--name')."""
    return {word[2:].split("=", 1)[0] for word in xla_flags.split() if word.startswith("--")}


def step_options(backend: str | None = None, xla_flags: str | None = None) -> dict[str, bool]:
    """compiler_options for a train step on `backend` (default: JAX's), given XLA_FLAGS
    (default: the environment's): the CPU options that XLA_FLAGS does not set itself."""
    if backend is None:
        import jax  # here, so that `import vice_gan` (which sets XLA_FLAGS) does not load JAX

        backend = jax.default_backend()
    if backend != "cpu":
        return {}
    given = _named(os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags)
    return {name: value for name, value in CPU_STEP_OPTIONS.items() if name not in given}


def with_process_flags(xla_flags: str) -> str:
    """XLA_FLAGS with `PROCESS_FLAGS` appended, except those it names already."""
    given = _named(xla_flags)
    extra = [f"--{name}={value}" for name, value in PROCESS_FLAGS.items() if name not in given]
    return " ".join([xla_flags.strip(), *extra]).strip()


def set_process_flags(environ: MutableMapping[str, str] = os.environ) -> None:
    """Adds `PROCESS_FLAGS` to XLA_FLAGS in `environ`; JAX reads them when its CPU backend
    starts (the first computation), so this must run before that to take effect."""
    environ["XLA_FLAGS"] = with_process_flags(environ.get("XLA_FLAGS", ""))


def cache_dir_from_flag(flag: str | None, environ: MutableMapping[str, str] = os.environ) -> str:
    """The compilation cache folder for a --compilation_cache_dir value ('' = none): unset means
    $JAX_COMPILATION_CACHE_DIR if the environment names one, else jax/ in vice-gan's cache
    folder (`user_cache.default_cache_dir`: $VICE_GAN_CACHE, default ~/.cache/vice_gan)."""
    if flag is None:
        flag = environ.get("JAX_COMPILATION_CACHE_DIR") or str(
            user_cache.default_cache_dir(environ) / "jax"
        )
    return os.path.abspath(os.path.expanduser(flag)) if flag else ""


def use_compilation_cache(path: str) -> str:
    """Points JAX's persistent compilation cache at `path` ('': no cache) for this process.

    Programs that compile in under a second (JAX's default threshold) are not stored. A folder
    that cannot be created costs the speed-up only: a warning, and the run goes on without one.

    Returns:
        the folder in use, or '' for none.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if path:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            logging.warning("compilation cache off: cannot create %s (%s)", path, e)
            path = ""
    if jax.config.jax_compilation_cache_dir != (path or None):
        jax.config.update("jax_compilation_cache_dir", path or None)
        # JAX opens its cache once; after a reset the next compile reopens it. Quietly: JAX
        # logs "Resetting cache" at INFO, which reads as if something were deleted.
        quiet = std_logging.getLogger(compilation_cache.reset_cache.__module__)
        level = quiet.level
        quiet.setLevel(std_logging.WARNING)
        try:
            compilation_cache.reset_cache()
        finally:
            quiet.setLevel(level)
    return path
