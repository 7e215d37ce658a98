"""Orbax checkpoints of both stages: save every N steps, keep the last K, resume the latest.

A checkpoint is `args.Composite(state=StandardSave(state), meta=JsonSave(meta))`; `meta` holds
the config fingerprint, the flags, package versions and a SHA-256 digest of the state's bytes.
Orbax writes each step into `<step>.orbax-checkpoint-tmp` and renames it when complete, so a
process killed mid-save leaves no torn checkpoint that `latest_step` would pick; the temporary
directory is removed when the next manager opens the directory (or at once when a save fails).
A stage directory also holds `fingerprint.json`: a directory made by another configuration is
refused with the differing settings named.

Resume order (`restore_latest`):
  1. the newest complete step (a temporary directory never counts);
  2. its `meta` item: the configuration that wrote it must match this run's (names the flags
     that differ, even if `fingerprint.json` was deleted);
  3. its `state` item, restored into a target built from the freshly initialised state (same
     tree, shapes, dtypes and shardings);
  4. the digest of the restored bytes must equal the one saved, so silent corruption of the
     array files is reported rather than trained on.
A failure at any of these steps is a `CheckpointError` naming the step directory, what is wrong
and how to fall back to the previous checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import shutil
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

FINGERPRINT_FILE = "fingerprint.json"
CHECKPOINTS = "checkpoints"
TMP_SUFFIX = ".orbax-checkpoint-tmp"
_DIGEST_KEY = "state_sha256"  # in `meta`; stripped from what `restore_latest` returns


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot be used; the message says which and why."""


# --- The configuration a directory belongs to ---------------------------------------------------
def _describe_diffs(diffs: dict[str, tuple[Any, Any]], where: str) -> str:
    return "\n".join(
        f"  --{k}: {where} has {a!r}, this run has {b!r}" for k, (a, b) in sorted(diffs.items())
    )


def _diffs(stored: dict, fields: dict) -> dict[str, tuple[Any, Any]]:
    diffs = {k: (stored.get(k), v) for k, v in fields.items() if stored.get(k) != v}
    diffs.update({k: (v, None) for k, v in stored.items() if k not in fields})
    return diffs


def check_fingerprint(directory: str, fields: dict[str, Any], *, record: bool = True) -> None:
    """Refuses `directory` if it was made with other settings; records them otherwise.

    Args:
      directory: a stage directory (the GAN workdir or the autoencoder's ae_dir).
      fields: `config.fingerprint_fields(config, stage)`.
      record: write `fingerprint.json` if absent (process 0 only); False only checks, for
        callers that must not create anything (preflight checks, read-only modes).
    Raises:
      CheckpointError: naming the file and each setting whose value differs.
    """
    path = os.path.join(directory, FINGERPRINT_FILE)
    if os.path.exists(path):
        try:
            with open(path) as f:
                stored = json.load(f)
            if not isinstance(stored, dict):
                raise ValueError(f"expected a JSON object, got {type(stored).__name__}")
        except (OSError, ValueError) as e:
            raise CheckpointError(
                f"{path} is unreadable ({e}); it records which configuration made this "
                "directory. Restore it, or use another directory."
            ) from None
        diffs = _diffs(stored, fields)
        if diffs:
            raise CheckpointError(
                f"{directory} holds a run of another configuration ({path} differs):\n"
                f"{_describe_diffs(diffs, 'directory')}\n"
                "Use another --workdir (or --ae_dir), or the same flags."
            )
        return
    if record and jax.process_index() == 0:
        os.makedirs(directory, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(fields, f, indent=2, sort_keys=True)
        os.replace(tmp, path)


# --- Saving -------------------------------------------------------------------------------------
def make_manager(directory: str, keep: int, save_every: int = 1) -> ocp.CheckpointManager:
    """A manager over `directory`/checkpoints keeping the last `keep` steps.

    Temporary directories left by a killed save are removed when it opens.
    """
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        save_interval_steps=save_every,
        create=True,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(
        os.path.join(directory, CHECKPOINTS), options=options, item_names=("state", "meta")
    )


def state_digest(tree: Any) -> str:
    """SHA-256 over every leaf's path, dtype, shape and bytes (host copies; replicated or
    fully addressable arrays)."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(tree)):
        a = np.ascontiguousarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _snapshot(paths: list[str]) -> list[tuple[str, int, int]]:
    found = []
    for path in paths:
        for root, _, files in os.walk(path):
            for name in files:
                try:
                    st = os.stat(os.path.join(root, name))
                except OSError:
                    continue
                found.append((os.path.join(root, name), st.st_size, st.st_mtime_ns))
    return sorted(found)


def _remove_temporary(manager: ocp.CheckpointManager, settle_s: float = 0.3) -> None:
    """Deletes unfinished step directories, so a failed save leaves nothing half-written.

    After a failed write Orbax stops waiting at the first error while the other writers of
    that step may still be running; removing their folder under them would make them fail
    noisily. So this first waits until the temporary folders have not changed for `settle_s`
    (at most 10 s).
    """
    if jax.process_index() != 0:
        return
    pattern = os.path.join(os.fspath(manager.directory), "*" + TMP_SUFFIX + "*")
    paths = glob.glob(pattern)
    if not paths:
        return
    deadline, quiet_since, last = time.monotonic() + 10.0, time.monotonic(), _snapshot(paths)
    while time.monotonic() < deadline and time.monotonic() - quiet_since < settle_s:
        time.sleep(0.05)
        now = _snapshot(paths)
        if now != last:
            quiet_since, last = time.monotonic(), now
    for path in glob.glob(pattern):
        shutil.rmtree(path, ignore_errors=True)


def _save_failed(manager: ocp.CheckpointManager, step: int, e: BaseException):
    """The error to raise for a failed save (of `step`, or of an earlier asynchronous one,
    whichever left its temporary directory). `finish` then removes what it left."""
    root = os.fspath(manager.directory)
    names = os.listdir(root) if os.path.isdir(root) else []
    torn = sorted(int(n.split(".")[0]) for n in names if TMP_SUFFIX in n and n[0].isdigit())
    first = (str(e).splitlines() or [type(e).__name__])[0][:300]
    full = (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left" in str(e)
    hint = " The disk is full: free space, then run the same command to resume." if full else ""
    which = ", ".join(map(str, torn)) if torn else str(step)
    done = all_steps(os.path.dirname(root))
    return CheckpointError(
        f"could not write checkpoint {which} under {root}: {type(e).__name__}: {first}. "
        f"The incomplete checkpoint was removed; complete checkpoints: {done or 'none'}.{hint}"
    )


def save(
    manager: ocp.CheckpointManager, step: int, state: Any, meta: dict, force: bool = False
) -> bool:
    """Saves (asynchronously) if `step` is due or `force`; returns whether it saved.

    Raises:
      CheckpointError: this save, or the previous one still being written, failed (disk full,
        unwritable directory...).
    """
    meta = {**meta, _DIGEST_KEY: state_digest(state)}
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    try:
        return manager.save(step, args=args, force=force)
    # Orbax reports write failures as OSError or as TensorStore's ValueError, here or (for an
    # earlier asynchronous save) on the next call; any of them means "not saved". The caller
    # then calls `finish` (as `open_manager` does), which removes the half-written step.
    except Exception as e:  # noqa: BLE001
        raise _save_failed(manager, step, e) from None


def finish(manager: ocp.CheckpointManager) -> None:
    """Waits for the last asynchronous save, closes the manager and removes what a failed save
    left half-written.

    Raises:
      CheckpointError: that save failed.
    """
    try:
        manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001 - see `save`
        raise _save_failed(manager, manager.latest_step(), e) from None
    finally:
        try:
            manager.close()
        except Exception:  # noqa: BLE001 - closing after a failed save may fail the same way
            pass
        _remove_temporary(manager)


@contextlib.contextmanager
def open_manager(directory: str, keep: int):
    """`make_manager` as a context: on leaving, waits for the last save and closes.

    If the body raised, a failing last save is only logged (often the same failure), so the
    body's error is the one reported; otherwise it raises `CheckpointError`.
    """
    manager = make_manager(directory, keep)
    try:
        yield manager
    except BaseException:
        try:
            finish(manager)
        except CheckpointError as e:
            logging.warning("while stopping: %s", e)
        raise
    finish(manager)


# --- Reading ------------------------------------------------------------------------------------
def all_steps(directory: str) -> list[int]:
    """Steps of the complete checkpoints in a stage directory, ascending; creates nothing."""
    root = os.path.join(directory, CHECKPOINTS)
    if not os.path.isdir(root):
        return []
    return sorted(
        int(n) for n in os.listdir(root) if n.isdigit() and os.path.isdir(os.path.join(root, n))
    )


def latest_step(directory: str) -> int | None:
    """The newest complete checkpoint step of a stage directory, or None; creates nothing."""
    steps = all_steps(directory)
    return steps[-1] if steps else None


def _abstract(tree: Any) -> Any:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )


def _unusable(manager: ocp.CheckpointManager, step: int, what: str) -> CheckpointError:
    directory = os.path.join(os.fspath(manager.directory), str(step))
    earlier = [s for s in manager.all_steps() if s < step]
    fallback = (
        f"delete {directory} to resume from step {max(earlier)}"
        if earlier
        else f"delete {directory} to start afresh"
    )
    return CheckpointError(f"checkpoint {directory} {what}. To go on, {fallback}.")


# TensorStore appends a repr of its spec object to its errors; the message before it says it all.
_TENSORSTORE_DETAILS = " See full TensorStore details"


def _first_line(e: BaseException) -> str:
    line = (str(e).splitlines() or [""])[0].split(_TENSORSTORE_DETAILS)[0]
    return f"{type(e).__name__}: {line[:300]}"


def restore_latest(
    manager: ocp.CheckpointManager, template: Any, fields: dict[str, Any] | None = None
) -> tuple[Any, dict] | None:
    """(state, meta) of the newest complete checkpoint, or None if there is none.

    Args:
      template: a state of the same configuration (e.g. freshly initialised, placed on the mesh);
        only its structure, shapes, dtypes and shardings are used.
      fields: this run's `fingerprint_fields`; when given, a checkpoint written by another
        configuration is refused with the differing flags named.
    Raises:
      CheckpointError: the checkpoint is unreadable, corrupt, or of another configuration.
    """
    step = manager.latest_step()
    if step is None:
        return None
    try:
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        meta = dict(meta)
    except Exception as e:  # noqa: BLE001 - any failure here is "this checkpoint is unusable"
        raise _unusable(
            manager, step, f"has an unreadable 'meta' item ({_first_line(e)})"
        ) from None
    if fields is not None and isinstance(meta.get("config"), dict):
        diffs = {k: (meta["config"].get(k), v) for k, v in fields.items()}
        diffs = {k: d for k, d in diffs.items() if d[0] != d[1]}
        if diffs:
            raise CheckpointError(
                f"checkpoint {manager.directory}/{step} was written by another configuration:\n"
                f"{_describe_diffs(diffs, 'checkpoint')}\n"
                "Use another --workdir (or --ae_dir), or the same flags."
            )
    args = ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(template)))
    try:
        state = manager.restore(step, args=args).state
    except Exception as e:  # noqa: BLE001
        raise _unusable(
            manager,
            step,
            f"cannot be restored into this configuration's state (corrupt or incomplete files "
            f"under its 'state' folder, or written by other code): {_first_line(e)}",
        ) from None
    saved = meta.pop(_DIGEST_KEY, None)
    if saved is not None and state_digest(state) != saved:
        raise _unusable(
            manager,
            step,
            "is corrupt: the bytes read from its 'state' folder do not match the digest saved "
            "with them",
        )
    return state, meta


def restore_from_directory(
    directory: str, template: Any, fields: dict[str, Any] | None = None
) -> tuple[Any, dict, int]:
    """Latest checkpoint of another stage's directory (e.g. the autoencoder's), read-only.

    Raises:
      CheckpointError: no checkpoint there, or it is unusable (see `restore_latest`).
    """
    ckpt_dir = os.path.join(directory, CHECKPOINTS)
    step = latest_step(directory)
    if step is None:
        raise CheckpointError(
            f"no complete checkpoint in {ckpt_dir}: run --mode=train_ae first (or point "
            "--ae_dir at a finished autoencoder run)"
        )
    manager = ocp.CheckpointManager(
        ckpt_dir, item_names=("state", "meta"), options=ocp.CheckpointManagerOptions(read_only=True)
    )
    try:
        restored = restore_latest(manager, template, fields)
    finally:
        manager.close()
    if restored is None:
        raise CheckpointError(f"no complete checkpoint in {ckpt_dir}")
    return restored[0], restored[1], step


def read_arrays(directory: str, step: int | None = None) -> tuple[int, dict[str, np.ndarray]]:
    """A stage directory's checkpoint as host arrays keyed by tree path, without a template.

    For comparing runs (resume tests, `experiments/kill_resume.py`) and inspecting checkpoints.

    Returns:
      (step, {'state/<path>': array}) of `step` or of the latest complete checkpoint.
    """
    step = latest_step(directory) if step is None else step
    if step is None:
        raise CheckpointError(f"no complete checkpoint in {os.path.join(directory, CHECKPOINTS)}")
    path = os.path.join(directory, CHECKPOINTS, str(step), "state")
    with ocp.PyTreeCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(path).item_metadata
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
        tree = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    flat = jax.tree_util.tree_leaves_with_path(tree)
    return step, {f"state{jax.tree_util.keystr(p)}": np.asarray(v) for p, v in flat}
