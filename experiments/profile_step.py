"""Where the GAN step's time goes: XLA's per-operation times, grouped by network and kind.

Usage:
  python experiments/profile_step.py --config 16            # the default step
  python experiments/profile_step.py --config 16 --dvid_impl mixed --top 30

Compiles the same step as `experiments/benchmark.py --parts gan` (same configurations, same
--dvid_impl / --conv_impl / --upconv_impl switches), runs --reps steps under the JAX profiler,
and reads the trace back (`jax.profiler.ProfileData`): every executed HLO operation's duration,
mapped through the compiled module's metadata to the network it belongs to (its Flax module
path), forward or backward (autodiff's `transpose(...)`), and its kind: 'ynn:dot' / 'ynn:conv'
(matrix products and convolutions XLA hands to YNNPACK), 'dot', 'conv' (XLA's own), 'copy'
(fusions that only move data: pads, slices, stacks, transposes) and 'fusion' (other fused
element-wise work). Operations run partly concurrently, so the grouped times add up to a bit
more than the wall time per step, which is printed too.

Prints one JSON line (wall s/step, the groups in ms per step) and then the tables.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import statistics
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import benchmark  # noqa: E402

from vice_gan import parallel, steps  # noqa: E402

NETWORKS = ("VideoDiscriminator", "ImageDiscriminator", "Generator", "Encoder", "MotionNet")
_COPY_WORDS = ("pad", "slice", "concatenate", "stack", "transpose", "copy", "bitcast")


def op_metadata(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> its op_name metadata (the JAX/Flax call path)."""
    meta = {}
    for line in hlo_text.splitlines():
        match = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = .*?op_name=\"([^\"]*)\"", line)
        if match:
            meta[match.group(1)] = match.group(2)
    return meta


def _words(name: str) -> list[str]:
    """'concatenate_bitcast_fusion.7' -> ['concatenate', 'bitcast']; 'wrapped_pad' -> ['pad']."""
    words = name.split(".")[0].split("_")
    return [w for w in words if w not in ("fusion", "wrapped")] or ["fusion"]


def classify(name: str, op_name: str) -> tuple[str, str, str]:
    """(network, 'fwd' | 'bwd', kind) of one executed operation."""
    net = next((n for n in NETWORKS if n in op_name), "other")
    direction = "bwd" if "transpose(" in op_name else "fwd"
    if name.startswith("ynn"):
        kind = "ynn:conv" if "conv_general_dilated" in op_name else "ynn:dot"
    elif name.startswith(("dot", "convolution")):
        kind = name.split(".")[0].replace("convolution", "conv")
    elif all(word in _COPY_WORDS for word in _words(name)):
        kind = "copy"
    else:
        kind = "fusion"
    return net, direction, kind


def op_times(compiled, args, reps: int) -> dict[str, float]:
    """Nanoseconds per step of every executed operation (HLO instruction name)."""
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        for _ in range(reps):
            jax.block_until_ready(compiled(*args))
        jax.profiler.stop_trace()
        (path,) = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
        data = jax.profiler.ProfileData.from_file(path)
    totals = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):  # XLA's executor threads
                continue
            for event in line.events:
                if re.fullmatch(r"[\w.\-]+", event.name):
                    totals[event.name] += event.duration_ns / reps
    return dict(totals)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=tuple(benchmark.CONFIGS), default="16")
    parser.add_argument("--reps", type=int, default=3, help="profiled steps")
    parser.add_argument("--top", type=int, default=20, help="slowest single operations listed")
    benchmark.add_step_arguments(parser)
    return parser


def main() -> None:
    args = make_parser().parse_args()
    benchmark.set_encoder_chunk(args.encoder_chunk)

    config, models, _ = benchmark.build(args, args.config)
    mesh = parallel.make_mesh()
    txs, state = benchmark.gan_state(config, models, mesh)
    step = parallel.shard_step(steps.make_gan_step(config, models, txs), mesh, donate_state=False)
    batch = benchmark.gan_batches(config, mesh)(0)
    print(f"compiling config {args.config} ...", file=sys.stderr, flush=True)
    compiled = step.lower(state, batch).compile()
    meta = op_metadata(compiled.as_text())

    walls = []
    for _ in range(2 + args.reps):  # two warm-up steps, then the timed ones
        start = time.perf_counter()
        jax.block_until_ready(compiled(state, batch))
        walls.append(time.perf_counter() - start)
    wall = statistics.median(walls[2:])
    print(f"profiling {args.reps} steps ...", file=sys.stderr, flush=True)
    times = op_times(compiled, (state, batch), args.reps)

    groups = collections.Counter()
    for name, ns in times.items():
        groups["/".join(classify(name, meta.get(name, "")))] += ns / 1e6
    print(
        json.dumps(
            {
                "config": args.config,
                "wall_s_per_step": round(wall, 4),
                "ops_ms_per_step": round(sum(groups.values()), 1),
                "groups_ms": {k: round(v, 1) for k, v in groups.most_common()},
            }
        )
    )
    ops_ms = sum(groups.values())
    print(f"\nconfig {args.config}: wall {1000 * wall:.0f} ms/step, operations {ops_ms:.0f} ms")
    print(f"{'ms/step':>8}  network/direction/kind")
    for key, ms in groups.most_common():
        if ms >= 0.5:
            print(f"{ms:8.1f}  {key}")
    print(f"\n{'ms/step':>8}  slowest operations (HLO name, call path)")
    for name, ns in sorted(times.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{ns / 1e6:8.1f}  {name[:32]:32s} {meta.get(name, '')[-90:]}")


if __name__ == "__main__":
    main()
