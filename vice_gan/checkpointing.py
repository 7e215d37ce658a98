"""Orbax checkpoints of both stages: save every N steps, keep the last K, resume the latest.

A checkpoint is `args.Composite(state=StandardSave(state), meta=JsonSave(meta))`; `meta` holds
the config fingerprint, the flags and package versions. Orbax writes each step into a temporary
directory and renames it when complete, so a process killed mid-save leaves no torn checkpoint
that `latest_step` would pick. A stage directory also holds `fingerprint.json`: a directory made
by another configuration is refused with the differing settings named.

Resume order (`restore_latest`): the newest complete step; its state is restored into a target
built from the freshly initialised state (same tree, shapes, dtypes and shardings), which also
checks that the checkpoint belongs to this configuration.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

FINGERPRINT_FILE = "fingerprint.json"


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot be used; the message says which and why."""


def check_fingerprint(directory: str, fields: dict[str, Any]) -> None:
    """Refuses `directory` if it was made with other settings; records them otherwise.

    Raises:
      CheckpointError: naming each setting whose value differs.
    """
    path = os.path.join(directory, FINGERPRINT_FILE)
    if os.path.exists(path):
        try:
            with open(path) as f:
                stored = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(
                f"{path} is unreadable ({e}); it records which configuration "
                "made this directory. Remove it only if you know."
            ) from None
        diffs = {k: (stored.get(k), v) for k, v in fields.items() if stored.get(k) != v}
        diffs.update({k: (v, None) for k, v in stored.items() if k not in fields})
        if diffs:
            lines = "\n".join(
                f"  --{k}: directory has {a!r}, this run has {b!r}"
                for k, (a, b) in sorted(diffs.items())
            )
            raise CheckpointError(
                f"{directory} holds a run of another configuration:\n{lines}\n"
                "Use another --workdir (or --ae_dir), or the same flags."
            )
        return
    if jax.process_index() == 0:
        os.makedirs(directory, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(fields, f, indent=2, sort_keys=True)
        os.replace(tmp, path)


def make_manager(directory: str, keep: int, save_every: int = 1) -> ocp.CheckpointManager:
    """A manager over `directory`/checkpoints keeping the last `keep` steps."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=save_every, create=True
    )
    return ocp.CheckpointManager(
        os.path.join(directory, "checkpoints"), options=options, item_names=("state", "meta")
    )


def save(
    manager: ocp.CheckpointManager, step: int, state: Any, meta: dict, force: bool = False
) -> bool:
    """Saves (asynchronously) if `step` is due or `force`; returns whether it saved."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    try:
        return manager.save(step, args=args, force=force)
    except OSError as e:  # e.g. disk full: the step directory stays temporary and is ignored
        raise CheckpointError(
            f"could not write checkpoint {step} under {manager.directory}: {e}"
        ) from None


def _abstract(tree: Any) -> Any:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )


def restore_latest(manager: ocp.CheckpointManager, template: Any) -> tuple[Any, dict] | None:
    """(state, meta) of the newest complete checkpoint, or None if there is none.

    Args:
      template: a state of the same configuration (e.g. freshly initialised, placed on the mesh);
        only its structure, shapes, dtypes and shardings are used.
    Raises:
      CheckpointError: the checkpoint is unreadable or does not match `template`.
    """
    step = manager.latest_step()
    if step is None:
        return None
    args = ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(template)), meta=ocp.args.JsonRestore()
    )
    try:
        restored = manager.restore(step, args=args)
    except Exception as e:  # noqa: BLE001 - any failure here is "this checkpoint is unusable"
        raise CheckpointError(
            f"checkpoint step {step} in {manager.directory} cannot be restored into this "
            f"configuration: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
        ) from None
    return restored.state, dict(restored.meta)


def restore_from_directory(directory: str, template: Any) -> tuple[Any, dict, int]:
    """Latest checkpoint of another stage's directory (e.g. the autoencoder's), read-only.

    Raises:
      CheckpointError: no checkpoint there, or it does not match `template`.
    """
    ckpt_dir = os.path.join(directory, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise CheckpointError(
            f"no checkpoints in {directory}: run --mode=train_ae first (or "
            "point --ae_dir at a finished autoencoder run)"
        )
    manager = ocp.CheckpointManager(
        ckpt_dir, item_names=("state", "meta"), options=ocp.CheckpointManagerOptions(read_only=True)
    )
    restored = restore_latest(manager, template)
    if restored is None:
        raise CheckpointError(f"no complete checkpoint in {ckpt_dir}")
    step = manager.latest_step()
    manager.close()
    return restored[0], restored[1], step
