"""Data parallelism: a 1-D device mesh, batch placement, and the shard_map wrapper of steps.

Steps are written per shard with every cross-example reduction over the axis `AXIS`; the same
function runs on 1 or N devices (and on several hosts) through `jax.jit(jax.shard_map(...))`.

The gradient trap (STYLE.md §1, measured): under shard_map the gradient of a replicated (P())
parameter comes back already summed over devices, so "grad, then pmean" gives N x the true
gradient. `grad_pmean` casts the parameters to device-varying first, which makes per-shard
gradients local, then pmean's them: correct under shard_map and pmap alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vice_gan import xla_options

AXIS = "batch"
PyTree = Any


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh over all (global) devices, axis `AXIS`, in auto-sharding mode."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


def check_divisible(name: str, size: int, mesh: Mesh) -> None:
    """Global batch sizes must split evenly over the devices: a clear error otherwise."""
    n = mesh.size
    if size % n:
        raise ValueError(f"--{name}={size} does not divide over {n} devices; use a multiple of {n}")


def put_replicated(tree: PyTree, mesh: Mesh) -> PyTree:
    """Places a host pytree (identical on every process) replicated on the mesh."""
    return jax.device_put(tree, replicated(mesh))


def put_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Makes global batch-sharded arrays from this process's rows of every entry.

    With one process the local rows are the global batch; with several, each process passes
    its own consecutive shard (process_index order), as the input pipeline produces them.
    """
    sharding = batch_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def to_varying(tree: PyTree) -> PyTree:
    """Marks replicated values as device-varying (see the module docstring)."""
    return jax.tree.map(lambda x: lax.pcast(x, AXIS, to="varying"), tree)


def pmean(tree: PyTree) -> PyTree:
    return lax.pmean(tree, AXIS)


def grad_pmean(loss_fn: Callable, params: PyTree, *args, has_aux: bool = True):
    """value_and_grad of `loss_fn(params, *args)` with the global-batch mean gradient.

    Returns ((loss, aux), grads) like `jax.value_and_grad(..., has_aux=True)`, with loss and
    grads pmean'd over `AXIS` (aux is returned as each shard computed it).
    """
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=has_aux)(to_varying(params), *args)
    return (pmean(loss), aux), pmean(grads)


def shard_step(fn: Callable, mesh: Mesh, *, donate_state: bool = True) -> Callable:
    """jit(shard_map(fn)) for fn(state, batch) -> (state, metrics).

    The state is replicated, the batch split along its leading axis, and the outputs (the new
    state and the pmean'd metrics) replicated. The state's buffers are donated. Compiled with
    `xla_options.step_options()`.
    """
    sharded = jax.shard_map(fn, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P()))
    return jax.jit(
        sharded,
        donate_argnums=(0,) if donate_state else (),
        compiler_options=xla_options.step_options(),
    )


def _cluster_detected() -> bool:
    """Whether JAX's own scheduler detection (SLURM, Open MPI, Cloud TPU VM or GKE, ...) finds
    the environment `jax.distributed.initialize()` can configure itself from.

    JAX has no public API for the question; its cluster classes are what `initialize()` itself
    consults, so asking them gives exactly its answer (a SLURM_JOB_ID alone, e.g. in an
    interactive allocation without srun, is not enough for it, nor for us).
    """
    try:
        from jax._src import clusters
    except ImportError:  # the internal module moved: only explicit flags enable distribution
        return False
    return any(
        not env.opt_in_only_method and env.is_env_present()
        for env in clusters.ClusterEnv._cluster_types
    )


def initialize_distributed(config) -> None:
    """Starts jax.distributed for multi-host runs (before any other JAX call).

    With --coordinator_address/--num_processes/--process_id set, uses them; otherwise, if a
    cluster scheduler's environment is detected (SLURM under srun, Open MPI, Cloud TPU pod
    slices), lets JAX configure itself from it; on a single machine without either it does
    nothing.
    """
    if config.coordinator_address is not None:
        jax.distributed.initialize(
            coordinator_address=config.coordinator_address,
            num_processes=config.num_processes,
            process_id=config.process_id,
        )
    elif _cluster_detected():
        jax.distributed.initialize()
