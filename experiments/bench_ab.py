"""Variants of our GAN step compiled in one process and timed in turn (A B A B ...).

Usage:
  python experiments/bench_ab.py --config 16 --rounds 20 \\
      --variant "" --variant "--dvid_impl mixed"

Each --variant is a string of benchmark.py's switches that choose how the step is computed
(--dvid_impl, --conv_impl, --upconv_impl, --encoder_chunk, --render_twice, --keep_activations,
--precision, --video_length); the first is the reference. Every variant's step is compiled and warmed up
once, then --rounds rounds run one step of each variant in turn, on the same batch. Per round,
ratio = the reference's time / the variant's (> 1: the variant is faster). Between processes
this machine's speed drifts by 10-30 % (BENCHMARKS.md), which hides changes of a few per cent
in `benchmark.py` runs alternated process by process; within a round all variants share the
drift, so the median ratio resolves them. The variants share one process, so peak memory is
not per variant (one `benchmark.py` process per variant measures that).

Prints one JSON line per variant, then a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import benchmark  # noqa: E402

from vice_gan import heap, parallel, steps, xla_options  # noqa: E402

# benchmark.py's switches that change the step itself; the others (--steps, --parts, ...) have
# no meaning for one variant.
VARIANT_SWITCHES = (
    "dvid_impl",
    "conv_impl",
    "upconv_impl",
    "encoder_chunk",
    "render_twice",
    "keep_activations",
    "precision",
    "video_length",
)


def parse_variant(text: str) -> argparse.Namespace:
    """benchmark.py's arguments for one variant string, e.g. '--dvid_impl mixed'.

    Raises:
        ValueError: a switch that is not in VARIANT_SWITCHES, or one benchmark.py rejects.
    """
    parser = benchmark.make_parser()
    defaults = vars(parser.parse_args([]))
    try:
        args = parser.parse_args(shlex.split(text))
    except SystemExit as e:  # argparse has printed why
        raise ValueError(f"variant {text!r}: not benchmark.py switches") from e
    other = [k for k, v in vars(args).items() if v != defaults[k] and k not in VARIANT_SWITCHES]
    if other:
        raise ValueError(
            f"variant {text!r}: --{other[0]} does not change the step; a variant takes only "
            + ", ".join(f"--{k}" for k in VARIANT_SWITCHES)
        )
    return args


def ratio_rows(names: list[str], times: list[list[float]]) -> list[dict]:
    """Per variant: median and fastest s/step, and the ratios to the first variant per round.

    Args:
        names: the variants' strings; names[0] is the reference.
        times: times[v][r] = variant v's step time in round r (s).
    """
    ref = times[0]
    rows = []
    for name, ts in zip(names, times, strict=True):
        ratios = [a / b for a, b in zip(ref, ts, strict=True)]
        rows.append(
            {
                "variant": name,
                "sec_per_step_median": round(statistics.median(ts), 4),
                "sec_per_step_min": round(min(ts), 4),
                "ratio_median": round(statistics.median(ratios), 3),
                "ratio_per_round": [round(r, 3) for r in ratios],
            }
        )
    return rows


def compile_variant(args: argparse.Namespace, config_name: str, mesh):
    """(compiled step, its state, its batch function, compile seconds) for one variant."""
    benchmark.set_encoder_chunk(args.encoder_chunk)  # read while tracing: per variant
    config, models, _ = benchmark.build(args, config_name)
    txs, state = benchmark.gan_state(config, models, mesh)
    step = parallel.shard_step(steps.make_gan_step(config, models, txs), mesh)
    batch = benchmark.gan_batches(config, mesh)
    first = batch(0)
    jax.block_until_ready(first)
    start = time.perf_counter()
    compiled = step.lower(state, first).compile()
    compile_s = time.perf_counter() - start
    heap.release_free_memory()
    return compiled, state, batch, compile_s


def join_variant_values(argv: list[str]) -> list[str]:
    """`--variant X` -> `--variant=X`: argparse reads a lone value that starts with '-' (e.g.
    "--render_twice") as an option and fails with "expected one argument"."""
    out, rest = [], iter(argv)
    for arg in rest:
        value = next(rest, None) if arg == "--variant" else None
        out.append(arg if value is None else f"--variant={value}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="16", choices=tuple(benchmark.CONFIGS))
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (>= 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    parser.add_argument(
        "--variant",
        action="append",
        default=None,
        help="benchmark.py switches of one variant ('' = the defaults); give two or more, "
        "the first is the reference",
    )
    args = parser.parse_args(join_variant_values(sys.argv[1:]))
    names = args.variant or []
    if len(names) < 2:
        parser.error("give at least two --variant (the first is the reference)")
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be >= 1 and --warmup >= 0")
    try:
        variants = [parse_variant(v) for v in names]
    except ValueError as e:
        parser.error(str(e))
    xla_options.use_compilation_cache(xla_options.cache_dir_from_flag(""))  # compile afresh
    mesh = parallel.make_mesh()
    runs = []
    for name, v in zip(names, variants, strict=True):
        print(f"compiling variant {name!r} ...", file=sys.stderr, flush=True)
        compiled, state, batch, compile_s = compile_variant(v, args.config, mesh)
        for i in range(args.warmup):
            state, metrics = compiled(state, batch(i))
            jax.block_until_ready(metrics)
        runs.append({"compiled": compiled, "state": state, "batch": batch, "compile_s": compile_s})
    times: list[list[float]] = [[] for _ in runs]
    for r in range(args.rounds):
        for run, ts in zip(runs, times, strict=True):
            b = run["batch"](args.warmup + r)
            jax.block_until_ready(b)
            start = time.perf_counter()
            run["state"], metrics = run["compiled"](run["state"], b)
            jax.block_until_ready(metrics)
            ts.append(time.perf_counter() - start)
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
    rows = ratio_rows(names, times)
    for row, run in zip(rows, runs, strict=True):
        row.update(config=args.config, rounds=args.rounds, compile_s=round(run["compile_s"], 2))
        print(json.dumps(row))
    print(f"\nconfig {args.config}, {args.rounds} rounds (ratio: reference s / variant s)")
    print(f"{'variant':40s} {'compile s':>9s} {'median s':>9s} {'min s':>8s} {'ratio':>6s}")
    for row in rows:
        print(
            f"{row['variant'] or '(defaults)':40s} {row['compile_s']:9.1f} "
            f"{row['sec_per_step_median']:9.4f} {row['sec_per_step_min']:8.4f} "
            f"{row['ratio_median']:6.3f}"
        )


if __name__ == "__main__":
    main()
