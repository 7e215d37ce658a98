"""What a gradient keeps from the forward pass, and when XLA may compute it: memory of the steps.

Tools that leave a function's values and gradients unchanged and only steer XLA:CPU's
buffer lifetimes (BENCHMARKS.md, "Memory: the generator's activations recomputed, its
transposed convs' gradients a phase at a time"):

- `recompute_in_backward`: keeps only what a `jax.checkpoint` policy names and recomputes the
  rest in the backward pass (the generator's BatchNorm and ReLU outputs).
- `after`: orders one computation after another; `layers.upconv2x_gemm_by_phase` uses it to
  build its gradient one output phase at a time.

They rely on `after(x, anchor)` = x + 0 * anchor: XLA:CPU drops `lax.optimization_barrier`
before its common-subexpression pass, but 0 * a is not folded for floats (a may be NaN), so
this data dependence survives every pass.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp


def _varying(x: jax.Array) -> frozenset:
    """The shard_map axes x varies along (empty outside shard_map)."""
    return frozenset(jax.typeof(x).manual_axis_type.varying)


def after(x, anchor: jax.Array):
    """x as a function of the scalar `anchor` (x + 0 * anchor): the same values, which XLA can
    neither merge with equal values computed before `anchor` exists nor compute before it.

    Non-float leaves, and x that `anchor` would turn from shard-invariant to shard-varying
    (a change of type under shard_map), are returned as they are.
    """
    if not isinstance(x, jax.Array) or not jnp.issubdtype(x.dtype, jnp.floating):
        return x
    if not _varying(anchor) <= _varying(x):
        return x
    return x + jnp.zeros((), x.dtype) * anchor.astype(x.dtype)


def _first_element(tree) -> jax.Array:
    """Element 0 of the first floating-point leaf of a cotangent tree."""
    floats = [g for g in jax.tree.leaves(tree) if jnp.issubdtype(g.dtype, jnp.floating)]
    if not floats:
        raise ValueError("the cotangent has no floating-point leaf to order the recomputation by")
    return floats[0].reshape(-1)[0]


def recompute_in_backward(fn: Callable, policy: Callable) -> Callable:
    """fn with the same values and gradients, whose backward pass keeps from the forward pass
    only what `policy` saves (a `jax.checkpoint` policy) and recomputes the rest, once the
    incoming gradient has arrived.

    `jax.checkpoint(fn, policy=policy)` alone did not do it on XLA:CPU: its optimization
    barriers are gone before common-subexpression elimination, which merged part of the
    recomputation with the forward pass and kept those values live in between (the
    generator's largest BatchNorm output, 128 MiB at ngf=64). Here every kept value enters
    the recomputation through `after` the gradient.
    """
    checkpointed = jax.checkpoint(fn, policy=policy)

    @jax.custom_vjp
    def wrapped(*args):
        return fn(*args)

    def fwd(*args):
        return jax.vjp(checkpointed, *args)  # (outputs, vjp: a pytree of the kept values)

    def bwd(vjp, dout):
        anchor = _first_element(dout)
        return jax.tree.map(lambda kept: after(kept, anchor), vjp)(dout)

    wrapped.defvjp(fwd, bwd)
    return functools.wraps(fn)(wrapped)
