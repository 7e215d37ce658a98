"""Throughput, compile time and memory of the real training and evaluation code.

Usage:
  python experiments/benchmark.py                          # configs 16, 32, 64; all parts
  python experiments/benchmark.py --configs 16 --parts gan # one config, the GAN step only
  python experiments/benchmark.py --configs 16 --conv_impl native --upconv_impl reference
                                                           # the convs as plain nn.Conv /
                                                           # nn.ConvTranspose compute them

Configurations (T = 16 frames, 64x64 RGB): '16' = ngf = ndf = 16, 8 clips + 8 images per step;
'32' = 32, 16 + 16; '64' = 64 (the paper), 32 + 32. The library's own functions are measured:
`state.create_gan_state`, `steps.make_gan_step` under `parallel.shard_step` (jit + shard_map over
all devices, the state donated), `steps.make_ae_step`, `generate.make_translate_fn`.

Parts (--parts):
  gan   the whole GAN step (D_I, D_V, G + R_m updates): AOT compile time (compile_s: tracing
        and lowering, trace_lower_s, plus XLA's compilation; compile_cpu_s: the CPU seconds
        of all threads in that time), then warm-up steps
        and the median of --steps timed steps; videos/s, real frames/s, generated frames/s.
  nets  every network alone at the step's batch sizes, forward and forward + backward (grads of
        a scalar w.r.t. parameters and input) in train mode, each jitted; median ms, and the
        compile time of each.
  ae    autoencoder pre-training step (--ae_size/--ae_type, batch --ae_batch): images/s.
  eval  evaluation throughput: generated clips/s through `make_translate_fn`, and clips/s of
        generation + SSIM + MSE + ACD (encoder) + FER mini-Xception (random weights: timing only).

Each measurement is one JSON line on stdout, then a table. peak_rss_mb is this process's peak
resident memory so far (getrusage): run one config and `--parts gan` per process to compare with
the PyTorch peer (experiments/bench_vs_peer.py does).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vice_gan import generate, heap, parallel, steps, xla_options  # noqa: E402
from vice_gan import state as state_lib  # noqa: E402
from vice_gan.config import Config  # noqa: E402
from vice_gan.evaluation import acd, fer, image_metrics  # noqa: E402

RSS_AFTER_IMPORT = heap.current_rss_mb()  # jax, numpy and vice-gan's modules, nothing run

# name -> (ngf = ndf, video batch, image batch)
CONFIGS = {"16": (16, 8, 8), "32": (32, 16, 16), "64": (64, 32, 32)}
PARTS = ("gan", "nets", "ae", "eval")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def timed(fn, *args, reps: int) -> list[float]:
    """Wall seconds of `reps` calls of fn(*args), each waited for."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return times


def build(args, name: str) -> tuple[Config, state_lib.Models, state_lib.Models]:
    """The Config of configuration `name` and its networks (with and without the batch axis)."""
    width, bv, bi = CONFIGS[name]
    config = Config(
        workdir="/tmp/vice_gan_benchmark",
        ngf=width,
        ndf=width,
        video_batch=bv,
        image_batch=bi,
        video_length=args.video_length,
        precision=args.precision,
        reuse_fakes=not args.render_twice,
        recompute_activations=not args.keep_activations,
        ae_size=args.ae_size,
        ae_type=args.ae_type,
        ae_batch=args.ae_batch,
    )

    def variant(models: state_lib.Models) -> state_lib.Models:
        # Same parameters, other computation: for before/after measurements.
        models = dataclasses.replace(
            models, generator=models.generator.clone(upconv_impl=args.upconv_impl)
        )
        if args.conv_impl != "default":
            models = dataclasses.replace(
                models,
                encoder=models.encoder.clone(conv_impl=args.conv_impl),
                dimg=models.dimg.clone(conv_impl=args.conv_impl),
                dvid=models.dvid.clone(conv_impl=args.conv_impl),
            )
        if args.dvid_impl:
            models = dataclasses.replace(models, dvid=models.dvid.clone(conv_impl=args.dvid_impl))
        return models

    models = variant(state_lib.build_models(config))
    local = variant(state_lib.build_models(config, axis_name=None))
    return config, models, local


def real_batch(config: Config, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random real data shaped like the input pipeline's batches ([-1, 1] floats)."""
    t = config.video_length
    return {
        "video": rng.uniform(-1, 1, (config.video_batch, t, 64, 64, 3)).astype(np.float32),
        "video_label": (np.arange(config.video_batch) % 6).astype(np.int32),
        "image": rng.uniform(-1, 1, (config.image_batch, 64, 64, 3)).astype(np.float32),
    }


def gan_state(config: Config, models, mesh):
    """(optimisers, replicated GAN state) from a freshly initialised autoencoder's encoder."""
    txs = state_lib.gan_optimizers(config)
    ae = state_lib.create_ae_state(config, models, state_lib.adam(config.ae_lr, config), 0)
    state = state_lib.create_gan_state(
        config, models, txs, ae.params["encoder"], ae.batch_stats["encoder"], 0
    )
    return txs, parallel.put_replicated(state, mesh)


def gan_batches(config: Config, mesh):
    """batch(i): one fixed random real batch plus step i's noise, sharded over the mesh."""
    noise = jax.jit(
        lambda k: steps.sample_gan_noise(k, config), out_shardings=parallel.batch_sharded(mesh)
    )
    data = parallel.put_batch(real_batch(config, np.random.default_rng(0)), mesh)

    def batch(i: int) -> dict:
        return {**data, **noise(jax.random.PRNGKey(i))}

    return batch


def bench_gan(args, name: str, config: Config, models, mesh) -> dict:
    """Compile time and steady-state speed of the whole GAN step."""
    start = time.perf_counter()
    txs, state = gan_state(config, models, mesh)
    init_s = time.perf_counter() - start
    rss_init = heap.peak_rss_mb()
    state_mb = sum(x.nbytes for x in jax.tree.leaves(state)) / 2**20
    if not args.no_trim:  # as train.run_loop does before its first step
        heap.release_cached_programs()
    rss_released = heap.current_rss_mb()
    step = parallel.shard_step(steps.make_gan_step(config, models, txs), mesh)
    batch = gan_batches(config, mesh)

    first = batch(0)
    jax.block_until_ready(first)
    if not args.no_trim:  # as train.compile_step does
        heap.release_free_memory()
    # Tracing + lowering to StableHLO (Python, one core), then XLA's compilation.
    start, cpu_start = time.perf_counter(), time.process_time()
    lowered = step.lower(state, first)
    lower_s = time.perf_counter() - start
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    # CPU seconds of all threads: XLA compiles kernels on both cores, and CPU time moves less
    # than wall time when another tenant takes a core.
    compile_cpu_s = time.process_time() - cpu_start
    rss_compile = heap.peak_rss_mb()
    # XLA's own accounting of the step's scratch buffers (activations, gradients, temporaries).
    memory = compiled.memory_analysis()
    temp_mb = memory.temp_size_in_bytes / 2**20 if memory is not None else float("nan")
    # XLA's count of the step's floating-point operations (multiply-adds count 2).
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    rss_now = heap.current_rss_mb()
    if not args.no_trim:  # as train.compile_step does between compiling and the first step
        heap.release_free_memory()
    rss_trimmed = heap.current_rss_mb()
    times = []
    for i in range(args.warmup + args.steps):
        b = batch(i)
        jax.block_until_ready(b)
        start = time.perf_counter()
        state, metrics = compiled(state, b)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    timed_steps = times[args.warmup :]
    med = statistics.median(timed_steps)
    frames = config.video_batch * config.video_length
    renders = 1 if config.reuse_fakes else 2
    loss = float(metrics["train/g_loss"])
    return {
        "part": "gan",
        "compile_s": round(compile_s, 2),
        "trace_lower_s": round(lower_s, 2),
        "compile_cpu_s": round(compile_cpu_s, 2),
        "init_s": round(init_s, 2),
        "first_step_s": round(times[0], 3),
        "sec_per_step_median": round(med, 4),
        "step_times": [round(t, 4) for t in timed_steps],
        "videos_per_s": round(config.video_batch / med, 2),
        "frames_per_s": round(frames / med, 1),
        "generated_frames_per_s": round(renders * frames / med, 1),
        "renders_per_step": renders,
        "g_loss_finite": bool(np.isfinite(loss)),
        "peak_rss_mb": round(heap.peak_rss_mb(), 1),
        # Where the peak comes from: after building and initialising the states, after
        # compiling (XLA/LLVM's compile-time memory), and the step's XLA scratch buffers.
        "peak_rss_after_init_mb": round(rss_init, 1),
        "state_mb": round(state_mb, 1),  # the GAN state's arrays
        "rss_after_import_mb": round(RSS_AFTER_IMPORT, 1),
        "rss_after_init_released_mb": round(rss_released, 1),
        "peak_rss_after_compile_mb": round(rss_compile, 1),
        # Resident memory right after compiling, and after giving the heap's free pages back.
        "rss_after_compile_mb": round(rss_now, 1),
        "rss_after_trim_mb": round(rss_trimmed, 1),
        "xla_temp_mb": round(temp_mb, 1),
        "xla_gflop_per_step": round(flops / 1e9, 2),
        "gflop_per_s": round(flops / 1e9 / med, 1),
    }


def _fwd_bwd_row(args, fwd, bwd, *inputs) -> dict:
    """Compile time and median ms of a jitted forward and forward + backward."""
    row = {}
    for tag, fn in (("fwd", fwd), ("fwd_bwd", bwd)):
        start = time.perf_counter()
        compiled = fn.lower(*inputs).compile()
        row[f"{tag}_compile_s"] = round(time.perf_counter() - start, 2)
        jax.block_until_ready(compiled(*inputs))
        times = timed(compiled, *inputs, reps=args.net_reps)
        row[f"{tag}_ms"] = round(1000 * statistics.median(times), 2)
    return row


def bench_nets(args, config: Config, local) -> dict:
    """Forward and forward + backward of each network alone, at the step's batch sizes.

    'codes' is the frozen encoder as the GAN step runs it (`steps.encode_frames`: inference
    mode, in chunks of `--encoder_chunk` frames; gradient w.r.t. the frames only).
    """
    key = jax.random.PRNGKey(0)
    bv, bi, t = config.video_batch, config.image_batch, config.video_length
    gen_in = state_lib.generator_input_dim(config)
    cases = {
        "D_V": (local.dvid, jnp.zeros((bv, t, 64, 64, 3))),
        "D_I": (local.dimg, jnp.zeros((bi, 64, 64, 3))),
        "G_I": (local.generator, jnp.zeros((bv * t, gen_in))),
        "encoder": (local.encoder, jnp.zeros((bv * t, 64, 64, 3))),
    }
    nets = args.nets.split(",")
    out = {}
    for net, (module, x) in cases.items():
        if net not in nets:
            continue
        variables = jax.jit(lambda m=module, x=x: m.init(key, x, train=False))()
        x = x + 0.5 * jax.random.normal(key, x.shape)

        def loss(params, x, m=module, v=variables):
            y, _ = m.apply({**v, "params": params}, x, train=True, mutable=["batch_stats"])
            y = y[0] if isinstance(y, tuple) else y
            return jnp.mean(jnp.square(y.astype(jnp.float32)))

        fwd, bwd = jax.jit(loss), jax.jit(jax.grad(loss, argnums=(0, 1)))
        out[net] = _fwd_bwd_row(args, fwd, bwd, variables["params"], x)
    if "codes" in nets:
        frames = jax.random.uniform(key, (bv * t, 64, 64, 3), minval=-1.0, maxval=1.0)
        variables = jax.jit(lambda: local.encoder.init(key, frames[:1], train=False))()

        def codes_loss(frames):
            codes = steps.encode_frames(
                local, variables["params"], variables["batch_stats"], frames
            )
            return jnp.mean(jnp.square(codes))

        out["codes"] = _fwd_bwd_row(
            args, jax.jit(codes_loss), jax.jit(jax.grad(codes_loss)), frames
        )
        out["codes"]["chunk"] = steps.encoder_chunk(bv * t)
    return {"part": "nets", "networks": out, "peak_rss_mb": round(heap.peak_rss_mb(), 1)}


def bench_ae(args, config: Config, models, mesh) -> dict:
    """Autoencoder pre-training step throughput."""
    tx = state_lib.adam(config.ae_lr, config)
    state = parallel.put_replicated(state_lib.create_ae_state(config, models, tx, 0), mesh)
    step = parallel.shard_step(steps.make_ae_step(config, models, tx), mesh)
    rng = np.random.default_rng(1)
    b = config.ae_batch
    images = rng.uniform(-1, 1, (b, 64, 64, 3)).astype(np.float32)
    batch = parallel.put_batch(
        {
            "image": images,
            **jax.tree.map(np.asarray, steps.sample_ae_noise(jax.random.PRNGKey(0), b)),
        },
        mesh,
    )
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(args.warmup + args.steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    med = statistics.median(times[args.warmup :])
    return {
        "part": "ae",
        "ae": f"{config.ae_type}/{config.ae_size}",
        "ae_batch": b,
        "compile_s": round(compile_s, 2),
        "sec_per_step_median": round(med, 4),
        "images_per_s": round(b / med, 1),
        "peak_rss_mb": round(heap.peak_rss_mb(), 1),
    }


def bench_eval(args, config: Config, models, local, mesh) -> dict:
    """Generated clips/s (make_translate_fn) and clips/s of generation + the metrics."""
    txs = state_lib.gan_optimizers(config)
    ae = state_lib.create_ae_state(config, models, state_lib.adam(config.ae_lr, config), 0)
    enc_params, enc_stats = ae.params["encoder"], ae.batch_stats["encoder"]
    state = state_lib.create_gan_state(config, models, txs, enc_params, enc_stats, 0)
    translate = generate.make_translate_fn(config, local)
    n, t = args.eval_batch, config.video_length
    rng = np.random.default_rng(2)
    inputs = jnp.asarray(rng.uniform(-1, 1, (n, t, 64, 64, 3)).astype(np.float32))
    real = jnp.asarray(rng.uniform(-1, 1, (n, t, 64, 64, 3)).astype(np.float32))
    cats = jnp.asarray(np.arange(n) % 6, jnp.int32)
    h0 = jax.random.normal(jax.random.PRNGKey(3), (n, 10))
    eps = jax.random.normal(jax.random.PRNGKey(4), (n, t, 10))
    encode = jax.jit(lambda x: steps.encode_frames(local, enc_params, enc_stats, x))
    module = fer.MiniXception()
    fer_vars = jax.jit(
        lambda: module.init(jax.random.PRNGKey(5), jnp.zeros((1, 64, 64, 1)), train=False)
    )()
    classifier = fer.FerClassifier(module, fer_vars)

    def generate_only():
        return translate(state, inputs, cats, h0, eps)

    def with_metrics():
        fakes = translate(state, inputs, cats, h0, eps)
        return (
            image_metrics.clip_ssim(fakes, real),
            image_metrics.clip_mse(fakes, real),
            acd.acd_with_encoder(encode, fakes, batch_size=256),
            fer.clip_emotion_labels(classifier.probs(fakes)),
        )

    out = {"part": "eval", "eval_batch": n}
    for tag, fn in (("generate", generate_only), ("generate_and_metrics", with_metrics)):
        jax.block_until_ready(fn())
        med = statistics.median(timed(fn, reps=args.steps))
        out[f"{tag}_clips_per_s"] = round(n / med, 2)
    out["peak_rss_mb"] = round(heap.peak_rss_mb(), 1)
    return out


def print_table(rows: list[dict]) -> None:
    gan = [r for r in rows if r["part"] == "gan"]
    if gan:
        print(
            f"\n{'config':>6} {'compile s':>9} {'s/step':>8} {'videos/s':>8} {'frames/s':>8} "
            f"{'peak RSS MiB':>12} {'after init':>10} {'after compile':>13} {'XLA temp':>8}"
        )
        for r in gan:
            print(
                f"{r['config']:>6} {r['compile_s']:>9.1f} {r['sec_per_step_median']:>8.3f} "
                f"{r['videos_per_s']:>8.2f} {r['frames_per_s']:>8.1f} {r['peak_rss_mb']:>12.0f} "
                f"{r['peak_rss_after_init_mb']:>10.0f} {r['peak_rss_after_compile_mb']:>13.0f} "
                f"{r['xla_temp_mb']:>8.0f}"
            )
    nets = [r for r in rows if r["part"] == "nets"]
    if nets:
        print(
            f"\n{'config':>6} {'network':<8} {'fwd ms':>9} {'fwd+bwd ms':>11} "
            f"{'fwd compile s':>13} {'fwd+bwd compile s':>17}"
        )
        for r in nets:
            for net, v in r["networks"].items():
                print(
                    f"{r['config']:>6} {net:<8} {v['fwd_ms']:>9.1f} {v['fwd_bwd_ms']:>11.1f} "
                    f"{v['fwd_compile_s']:>13.2f} {v['fwd_bwd_compile_s']:>17.2f}"
                )
    for r in rows:
        if r["part"] == "ae":
            print(
                f"\nconfig {r['config']}: AE {r['ae']} batch {r['ae_batch']}: "
                f"{r['images_per_s']:.0f} images/s (compile {r['compile_s']:.1f} s)"
            )
        if r["part"] == "eval":
            print(
                f"\nconfig {r['config']}: eval batch {r['eval_batch']}: "
                f"{r['generate_clips_per_s']:.1f} generated clips/s, "
                f"{r['generate_and_metrics_clips_per_s']:.1f} clips/s with SSIM+MSE+ACD+FER"
            )


def _frame_count(text: str) -> int:
    """argparse type of --encoder_chunk: an int >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def set_encoder_chunk(frames: int) -> None:
    """steps.ENCODER_CHUNK from --encoder_chunk (read while tracing a step; 0: all frames in
    one call, whatever their count)."""
    steps.ENCODER_CHUNK = frames or 2**31


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """The switches that choose the step's shapes and forms (what `build` reads), shared by
    benchmark.py and profile_step.py."""
    parser.add_argument(
        "--encoder_chunk",
        type=_frame_count,
        default=steps.ENCODER_CHUNK,
        help="frames per encoder call in the GAN step, 'codes' and eval (steps.ENCODER_CHUNK); "
        "0: all frames in one call (before)",
    )
    parser.add_argument("--video_length", type=int, default=16)
    parser.add_argument(
        "--precision",
        choices=("float32", "bfloat16"),
        default="float32",
        help="computation dtype (bfloat16 is for GPU/TPU; XLA:CPU emulates it slowly)",
    )
    parser.add_argument(
        "--conv_impl",
        choices=("default", "gemm", "native"),
        default="default",
        help="D_I/D_V/encoder convs: each network's default (D_V auto, encoder mixed, D_I "
        "native), all products (gemm), or all lax convs as nn.Conv (native: before)",
    )
    parser.add_argument(
        "--dvid_impl",
        choices=("auto", "gemm", "mixed", "slices", "native", "winograd", "winograd_mixed"),
        default=None,
        help="D_V's convs only (layers.VideoConv.impl), after --conv_impl",
    )
    parser.add_argument(
        "--upconv_impl",
        choices=("auto", "phases", "gemm", "fused", "reference"),
        default="auto",
        help="generator's stride-2 transposed convs (layers.UpConv2x.impl); 'reference' is "
        "nn.ConvTranspose's computation (before)",
    )
    parser.add_argument(
        "--render_twice",
        action="store_true",
        help="render the fakes again for the G update (reuse_fakes=False), as the peer does",
    )
    parser.add_argument(
        "--keep_activations",
        action="store_true",
        help="the G update keeps G's BatchNorm and ReLU outputs from the forward pass "
        "(recompute_activations=False; before)",
    )
    parser.add_argument("--ae_size", default="large", choices=("small", "medium", "large"))
    parser.add_argument("--ae_type", default="sae", choices=("sae", "vae"))
    parser.add_argument("--ae_batch", type=int, default=32)


def make_parser() -> argparse.ArgumentParser:
    """benchmark.py's command line (also what `bench_ab.py` parses each variant with)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="16,32,64", help=f"comma list of {list(CONFIGS)}")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {PARTS}")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (>= 5 recommended)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    parser.add_argument("--net_reps", type=int, default=5, help="timed calls per network")
    parser.add_argument(
        "--nets",
        default="D_V,D_I,G_I,encoder,codes",
        help="networks of --parts nets ('codes': the frozen encoder as the GAN step runs it)",
    )
    add_step_arguments(parser)
    parser.add_argument(
        "--no_trim",
        action="store_true",
        help="keep the initialisation's programs and the heap's free pages before compiling and "
        "running the GAN step (before: no heap.release_cached_programs / release_free_memory)",
    )
    parser.add_argument(
        "--compilation_cache_dir",
        default="",
        help="JAX's persistent compilation cache (as main's flag of that name); the default '' "
        "compiles afresh, also when JAX_COMPILATION_CACHE_DIR is set. Run twice with one folder "
        "to time a warm start (compile_s of the second run)",
    )
    parser.add_argument("--eval_batch", type=int, default=32, help="clips per evaluation call")
    return parser


def main() -> None:
    parser = make_parser()
    args = parser.parse_args()
    parts = args.parts.split(",")
    for p in parts:
        if p not in PARTS:
            parser.error(f"unknown part {p!r}; choose from {PARTS}")
    names = args.configs.split(",")
    for name in names:
        if name not in CONFIGS:
            parser.error(f"unknown config {name!r}; choose from {list(CONFIGS)}")

    set_encoder_chunk(args.encoder_chunk)
    cache_dir = xla_options.use_compilation_cache(
        xla_options.cache_dir_from_flag(args.compilation_cache_dir)  # '' (the default): none
    )
    mesh = parallel.make_mesh()
    env = {
        "compilation_cache_dir": cache_dir or None,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": len(jax.devices()),
        "device": str(jax.devices()[0].device_kind),
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "precision": args.precision,
        "conv_impl": args.conv_impl,
        "dvid_impl": args.dvid_impl,
        "upconv_impl": args.upconv_impl,
        "encoder_chunk": args.encoder_chunk,
        "reuse_fakes": not args.render_twice,
        "recompute_activations": not args.keep_activations,
    }
    rows = []
    for name in names:
        config, models, local = build(args, name)
        common = {
            "config": name,
            "ngf": config.ngf,
            "ndf": config.ndf,
            "video_batch": config.video_batch,
            "image_batch": config.image_batch,
            "T": config.video_length,
        }
        for part in parts:
            if part == "gan":
                row = bench_gan(args, name, config, models, mesh)
            elif part == "nets":
                row = bench_nets(args, config, local)
            elif part == "ae":
                row = bench_ae(args, config, models, mesh)
            else:
                row = bench_eval(args, config, models, local, mesh)
            row = {**common, **row, **env}
            print(json.dumps(row), flush=True)
            rows.append(row)
    print_table(rows)


if __name__ == "__main__":
    main()
