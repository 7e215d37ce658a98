"""The two training stages and the one loop driver they share.

`train_autoencoder(config)` pre-trains the chosen autoencoder (thesis §4.1) in `config.ae_dir`;
`train_gan(config)` trains VICE-GAN (thesis §4.3) in `config.workdir`, starting from that
autoencoder's encoder. Both resume automatically from the latest checkpoint of their directory,
and running past the last step is a no-op.

Data flow: TFDS builder -> `registry.load_videos` (all videos in memory) -> subject split ->
`TrainBatches` (deterministic per step, prefetched) -> `parallel.put_batch` + step noise ->
`jit(shard_map(step))` -> metrics (JSONL + TensorBoard), checkpoints (Orbax), sample GIFs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable

import jax
import numpy as np
import optax
from absl import logging

from vice_gan import checkpointing, face_check, generate, heap, parallel, steps, writers
from vice_gan import config as config_lib
from vice_gan import state as state_lib
from vice_gan.config import Config
from vice_gan.datasets import input_pipeline, registry, splits


class TrainingDivergedError(RuntimeError):
    """A loss or norm became NaN/Inf; nothing from that step on was saved."""


def _close_writer(writer: writers.MetricWriter) -> None:
    """Closes the log writer; a failure (e.g. a full disk) must not hide the run's own error."""
    try:
        writer.close()
    except OSError as e:
        logging.warning("could not flush the logs: %s", e)


@dataclasses.dataclass(frozen=True)
class Data:
    """A data set in memory with its subject split."""

    table: input_pipeline.VideoTable
    split: splits.Split


def load_data(config: Config) -> Data:
    """Loads (building if needed) the data set and its split; writes and logs the split.

    The split file goes beside the prepared data (`<data_dir>/vice_gan_splits/`) and into the
    run directory, and its summary into the run log.
    """
    span = input_pipeline.clip_span(config.video_length, config.frame_stride)

    def load() -> input_pipeline.VideoTable:
        try:
            return registry.load_videos(
                config.dataset, config.data_dir, manual_dir=config.manual_dir, min_frames=span
            )
        except registry.DatasetError as e:
            if "no video of at least" not in str(e):
                raise
            raise registry.DatasetError(
                f"{e}: a clip of --video_length={config.video_length} at --frame_stride="
                f"{config.frame_stride} spans {span} frames; lower one of them"
            ) from None

    if jax.process_count() == 1:
        table = load()
    else:
        # Process 0 prepares the data set first; the others then read it (or, on hosts with
        # their own disks, prepare their own copy) instead of racing on a half-built one.
        from jax.experimental import multihost_utils

        table = load() if jax.process_index() == 0 else None
        multihost_utils.sync_global_devices("vice_gan: data set prepared")
        table = table if table is not None else load()
    split = splits.make_split_for_table(table, config.split_seed)
    name = config.dataset.replace("/", "-")
    if jax.process_index() == 0:
        for directory in (os.path.join(config.data_dir, "vice_gan_splits"), config.workdir):
            splits.save_split(
                split, os.path.join(directory, f"split_{name}_seed{config.split_seed}.json")
            )
    logging.info(
        "data %s: %d videos of %d subjects\n%s",
        config.dataset,
        len(table),
        len(table.subject_names),
        splits.describe(split),
    )
    return Data(table, split)


def _format_progress(stage: str, step: int, total: int, metrics: dict, rate: float) -> str:
    eta = (total - step) / rate if rate > 0 else float("inf")
    eta_s = f"{int(eta // 60)}m{int(eta % 60):02d}s" if math.isfinite(eta) else "?"
    shown = " ".join(
        f"{k.split('/')[-1]}={v:.4f}" for k, v in metrics.items() if k.startswith("train/")
    )
    return f"[{stage}] step {step}/{total} | {shown} | {rate:.2f} steps/s | ETA {eta_s}"


def run_loop(
    *,
    stage: str,
    config: Config,
    directory: str,
    state,
    step_fn: Callable,
    batches: input_pipeline.TrainBatches,
    noise_fn: Callable,
    num_steps: int,
    mesh,
    meta: dict,
    writer: writers.MetricWriter,
    sample_fn: Callable | None = None,
):
    """Runs `step_fn` from the latest checkpoint in `directory` to `num_steps`.

    Checkpoints every `config.checkpoint_every` steps and at the end (keeping the last
    `config.keep_checkpoints`), logs every `config.log_every` steps, calls `sample_fn(state,
    step)` every `config.sample_every` steps, and stops on a non-finite metric (losses, grad and
    param norms) before saving or sampling that step.

    Memory: before the loop it drops the programs compiled so far (the states'
    initialisation: `heap.release_cached_programs`) and compiles the step ahead of time,
    giving the compiler's freed heap back before the first step runs (`compile_step`).

    Resuming is exact: the state (params, optimiser and BN statistics, step, base key) comes
    from the checkpoint, batch k is a pure function of (seed, k) and the step noise is
    fold_in(base key, k), so a killed and restarted run computes what an uninterrupted one does.

    Returns:
      the final state.
    Raises:
      TrainingDivergedError: a metric is NaN/Inf (names the step and the metrics).
      checkpointing.CheckpointError: the latest checkpoint is unusable, or a save failed.
    """
    with checkpointing.open_manager(directory, config.keep_checkpoints) as manager:
        fields = config_lib.fingerprint_fields(config, stage)
        restored = checkpointing.restore_latest(manager, state, fields)
        if restored is not None:
            state = restored[0]
            logging.info("[%s] resumed from step %d in %s", stage, int(state.step), directory)
        start = int(jax.device_get(state.step))
        writer.rewind(start)  # a killed run may have logged steps after its last checkpoint
        if start >= num_steps:
            logging.info(
                "[%s] already trained for %d >= %d steps; nothing to do", stage, start, num_steps
            )
            return state
        base_key = jax.device_get(state.rng)
        heap.release_cached_programs()  # initialisation's programs: not run again
        t_window, n_window = time.perf_counter(), 0
        for step, local in zip(
            range(start, num_steps), batches.iterate(start, num_steps - start), strict=False
        ):
            batch = parallel.put_batch(local, mesh)
            batch.update(noise_fn(jax.random.fold_in(base_key, step)))
            if step == start:  # up to a minute with nothing else to show: announce and time it
                logging.info("[%s] compiling the step", stage)
                t_compile = time.perf_counter()
                step_fn = compile_step(step_fn, state, batch)
                logging.info("[%s] step compiled in %.1f s", stage, time.perf_counter() - t_compile)
            state, metrics = step_fn(state, batch)
            # Every step: a non-finite value must be caught before the state reaches a checkpoint.
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            bad = [k for k, v in metrics.items() if not math.isfinite(v)]
            if bad:
                raise TrainingDivergedError(
                    f"[{stage}] step {step + 1}: {', '.join(f'{k}={metrics[k]}' for k in bad)} "
                    f"not finite; stopped without saving step {step + 1} (last checkpoint: "
                    f"{manager.latest_step()}, in {directory}). Try a lower learning rate or "
                    "another --seed."
                )
            done, n_window = step + 1, n_window + 1
            if done % config.log_every == 0 or done == num_steps or step == start:
                rate = n_window / max(time.perf_counter() - t_window, 1e-9)
                writer.write_scalars(done, {**metrics, "train/steps_per_sec": rate})
                line = _format_progress(stage, done, num_steps, metrics, rate)
                if step == start:  # includes compilation: its rate would mislead the ETA
                    line = (
                        line.rsplit(" | ", 2)[0] + f" | first step incl. compile {1 / rate:.1f} s"
                    )
                logging.info(line)
                t_window, n_window = time.perf_counter(), 0
            if done % config.checkpoint_every == 0 or done == num_steps:
                checkpointing.save(manager, done, state, meta, force=True)
            due = config.sample_every and (done % config.sample_every == 0 or done == num_steps)
            if sample_fn and due:
                sample_fn(state, done)
        return state


def compile_step(step_fn: Callable, state, batch: dict) -> Callable:
    """`step_fn` (a jitted step) compiled ahead of time for these arguments' shapes.

    The compiler's freed memory is given back to the OS before the step first runs
    (`heap.release_free_memory`), so the step's buffers do not come on top of it: with
    `run_loop`'s `heap.release_cached_programs`, the GAN step at ngf = ndf = 16 peaked at 778
    instead of 904 MiB, at 32 at 1581 instead of 1726 MiB (BENCHMARKS.md, "Memory"). The
    compiled step cannot retrace: a batch of another shape is an error, never a silent
    recompilation.
    """
    heap.release_free_memory()  # e.g. what compiling the batch's noise left: a lower start
    compiled = step_fn.lower(state, batch).compile()
    heap.release_free_memory()
    return compiled


def with_param_norms(step_fn: Callable, players: dict[str, Callable]) -> Callable:
    """Adds 'param_norm/<player>' (L2 norm of its parameters after the update) to the metrics
    of a per-shard step, unless the step reports it already.

    The norms are replicated like the parameters, so they need no collective; a NaN/Inf in
    any player's parameters thus stops the loop even when the losses are still finite.
    """

    def step(state, batch):
        state, metrics = step_fn(state, batch)
        for name, params_of in players.items():
            metrics.setdefault(f"param_norm/{name}", optax.tree.norm(params_of(state)))
        return state, metrics

    return step


def _meta(config: Config, stage: str) -> dict:
    """What each checkpoint records besides the state: who wrote it, with which flags."""
    import flax
    import orbax.checkpoint

    return {
        "stage": stage,
        "fingerprint": config_lib.fingerprint(config, stage),
        "config": dataclasses.asdict(config),
        "versions": {
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "orbax-checkpoint": orbax.checkpoint.__version__,
        },
    }


def _ae_template(config: Config, models: state_lib.Models, mesh):
    tx = state_lib.adam(config.ae_lr, config)
    state = state_lib.create_ae_state(config, models, tx, config.seed)
    return tx, parallel.put_replicated(state, mesh)


def train_autoencoder(config: Config, data: Data | None = None) -> state_lib.AeState:
    """Autoencoder pre-training in `config.ae_dir` on the training subjects' frames.

    The autoencoder never sees a test subject (whatever --condition), so one pre-trained
    autoencoder serves all eight variants of the study.
    """
    data = data or load_data(config)
    mesh = parallel.make_mesh()
    parallel.check_divisible("ae_batch", config.ae_batch, mesh)
    checkpointing.check_fingerprint(config.ae_dir, config_lib.fingerprint_fields(config, "ae"))
    models = state_lib.build_models(config)
    tx, state = _ae_template(config, models, mesh)
    indices = splits.train_indices(data.table, data.split, "unseen", include_neutral=True)
    batches = input_pipeline.TrainBatches(
        data.table,
        indices,
        video_batch=0,
        image_batch=config.ae_batch,
        video_length=config.video_length,
        frame_stride=config.frame_stride,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    step_fn = with_param_norms(steps.make_ae_step(config, models, tx), {"ae": lambda s: s.params})
    step_fn = parallel.shard_step(step_fn, mesh)
    noise_fn = jax.jit(
        lambda k: steps.sample_ae_noise(k, config.ae_batch),
        out_shardings=parallel.batch_sharded(mesh),
    )
    writer = writers.MetricWriter(
        os.path.join(config.ae_dir, "logs"), enabled=jax.process_index() == 0
    )
    writer.write_scalars(0, {"param_count/autoencoder": state_lib.param_count(state.params)})
    try:
        state = run_loop(
            stage="ae",
            config=config,
            directory=config.ae_dir,
            state=state,
            step_fn=step_fn,
            batches=batches,
            noise_fn=noise_fn,
            num_steps=config.ae_num_steps,
            mesh=mesh,
            meta=_meta(config, "ae"),
            writer=writer,
        )
    finally:
        _close_writer(writer)
    if jax.process_index() == 0:
        _write_face_check_reference(config, data, state)
    return state


def _write_face_check_reference(config: Config, data: Data, state: state_lib.AeState) -> None:
    """`<ae_dir>/face_check.json` for the trained autoencoder, unless it is there already."""
    step = int(np.asarray(state.step.addressable_data(0)))
    try:
        existing = face_check.read_reference(config.ae_dir)
    except ValueError:
        existing = None
    if existing is not None and existing["ae_step"] == step:
        return
    host = jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), state)
    ref = face_check.make_reference(
        state_lib.build_models(config, axis_name=None),
        host.params,
        host.batch_stats,
        data.table,
        data.split,
        dataset=config.dataset,
        ae_step=step,
    )
    path = face_check.write_reference(config.ae_dir, ref)
    logging.info(
        "face check: held-out faces score <= %.3f, inputs above %.3f are refused (%s)",
        ref["held_out_faces"]["max"],
        ref["threshold"],
        path,
    )


def load_encoder(config: Config, models: state_lib.Models, mesh) -> tuple[dict, dict]:
    """The pre-trained encoder's (params, batch_stats) from the latest AE checkpoint."""
    fields = config_lib.fingerprint_fields(config, "ae")
    checkpointing.check_fingerprint(config.ae_dir, fields, record=False)
    tx = state_lib.adam(config.ae_lr, config)
    template = state_lib.abstract_state(
        lambda: state_lib.create_ae_state(config, models, tx, config.seed),
        parallel.replicated(mesh),
    )
    ae_state, meta, step = checkpointing.restore_from_directory(config.ae_dir, template, fields)
    logging.info("encoder from %s (autoencoder step %d)", config.ae_dir, step)
    return ae_state.params["encoder"], ae_state.batch_stats["encoder"]


def init_gan_state(config: Config, models: state_lib.Models, mesh):
    """(optimisers, fresh GAN state on the mesh) around the pre-trained encoder."""
    txs = state_lib.gan_optimizers(config)
    enc_params, enc_stats = load_encoder(config, models, mesh)
    state = state_lib.create_gan_state(
        config, models, txs, jax.device_get(enc_params), jax.device_get(enc_stats), config.seed
    )
    return txs, parallel.put_replicated(state, mesh)


def eval_pairs(config: Config, data: Data) -> dict[str, np.ndarray]:
    """The run's evaluation pairs (input clip, target clip and label) for its condition."""
    return input_pipeline.eval_pairs(
        data.table,
        data.split,
        config.condition,
        config.video_length,
        config.frame_stride,
        config.seed,
        config.eval_input,
    )


def sample_inputs(config: Config, data: Data, rows: int = 4) -> np.ndarray:
    """Identity sources for sample grids: one evaluation input clip per test subject."""
    pairs = eval_pairs(config, data)
    _, first = np.unique(pairs["subject"], return_index=True)
    return pairs["input"][np.sort(first)[:rows]]


def train_gan(config: Config, data: Data | None = None) -> state_lib.GanState:
    """VICE-GAN training in `config.workdir` (thesis §4.3, §5.2)."""
    data = data or load_data(config)
    mesh = parallel.make_mesh()
    parallel.check_divisible("video_batch", config.video_batch, mesh)
    parallel.check_divisible("image_batch", config.image_batch, mesh)
    checkpointing.check_fingerprint(config.workdir, config_lib.fingerprint_fields(config, "gan"))
    models = state_lib.build_models(config)
    txs, state = init_gan_state(config, models, mesh)
    indices = splits.train_indices(data.table, data.split, config.condition)
    batches = input_pipeline.TrainBatches(
        data.table,
        indices,
        video_batch=config.video_batch,
        image_batch=config.image_batch,
        video_length=config.video_length,
        frame_stride=config.frame_stride,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    players = {
        "gen": lambda s: s.gen_params,
        "dimg": lambda s: s.dimg_params,
        "dvid": lambda s: s.dvid_params,
    }
    step_fn = parallel.shard_step(
        with_param_norms(steps.make_gan_step(config, models, txs), players), mesh
    )
    noise_fn = jax.jit(
        lambda k: steps.sample_gan_noise(k, config), out_shardings=parallel.batch_sharded(mesh)
    )
    is_main = jax.process_index() == 0
    writer = writers.MetricWriter(os.path.join(config.workdir, "logs"), enabled=is_main)
    writer.write_scalars(
        0,
        {
            "param_count/generator": state_lib.param_count(state.gen_params["generator"]),
            "param_count/motion": state_lib.param_count(state.gen_params["motion"]),
            "param_count/encoder": state_lib.param_count(state.enc_params),
            "param_count/image_discriminator": state_lib.param_count(state.dimg_params),
            "param_count/video_discriminator": state_lib.param_count(state.dvid_params),
        },
    )
    translate = generate.make_translate_fn(config, state_lib.build_models(config, axis_name=None))
    inputs = sample_inputs(config, data)

    def write_samples(st, step):
        # Every process renders (with several processes the state spans all of their devices,
        # so the jitted generator needs all of them); only process 0 writes.
        grid = generate.emotion_grid(translate, st, inputs, jax.random.PRNGKey(config.seed))
        if not is_main:
            return
        generate.write_emotion_grid(
            os.path.join(config.workdir, "samples", f"step_{step:07d}"), inputs, grid
        )

    try:
        return run_loop(
            stage="gan",
            config=config,
            directory=config.workdir,
            state=state,
            step_fn=step_fn,
            batches=batches,
            noise_fn=noise_fn,
            num_steps=config.num_steps,
            mesh=mesh,
            meta=_meta(config, "gan"),
            writer=writer,
            sample_fn=write_samples,
        )
    finally:
        _close_writer(writer)
