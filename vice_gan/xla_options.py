"""XLA compiler options of vice-gan's train steps (jax.jit's `compiler_options`, per program).

`xla_cpu_use_fusion_emitters=False`: XLA:CPU generates the element-wise loops around the
matrix products (pads, slices, transposes, BatchNorm arithmetic) with its older LLVM IR
emitters instead of its MLIR fusion emitters. On the whole GAN step (2-core AVX2 CPU,
BENCHMARKS.md, "XLA:CPU's loop emitters") it compiles with about half the memory at every
width measured (and ~6 s faster at ngf = ndf = 16), and runs steps as fast at widths 16 and 32
(at 64 two measurements disagreed within the machine's spread). Only the CPU backend knows the
option, so other backends get none.

An option named in the user's XLA_FLAGS is left to XLA_FLAGS (`--xla_cpu_use_fusion_emitters=
true` brings the MLIR emitters back, e.g. to compare).
"""

from __future__ import annotations

import os

import jax

CPU_STEP_OPTIONS: dict[str, bool] = {"xla_cpu_use_fusion_emitters": False}


def _named(xla_flags: str) -> set[str]:
    """Names of the flags in an XLA_FLAGS string ('--name=value' or '--name')."""
    return {word[2:].split("=", 1)[0] for word in xla_flags.split() if word.startswith("--")}


def step_options(backend: str | None = None, xla_flags: str | None = None) -> dict[str, bool]:
    """compiler_options for a train step on `backend` (default: JAX's), given XLA_FLAGS
    (default: the environment's): the CPU options that XLA_FLAGS does not set itself."""
    backend = jax.default_backend() if backend is None else backend
    if backend != "cpu":
        return {}
    given = _named(os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags)
    return {name: value for name, value in CPU_STEP_OPTIONS.items() if name not in given}
