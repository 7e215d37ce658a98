"""Forward + backward time of each `layers.UpConv2x` form on the layers vice-gan runs.

Usage:
  python experiments/bench_upconv.py                       # every layer, 'phases' and 'gemm'
  python experiments/bench_upconv.py --impls phases,gemm,fused --reps 7

The layers: the generator's four stride-2 transposed convolutions (K4 P1) at ngf = 16 / 32 / 64
with 8 / 16 / 32 clips of 16 frames (the benchmark configurations '16', '32', '64'), and the
large and small autoencoders' decoders (K3 P1 / K2 P0) on a batch of 32 frames. Each call is
one jitted vjp: the layer, a ReLU, and the gradients w.r.t. input and kernel under a random
cotangent (as in a training step). Prints one JSON line per layer (median ms per form, and what
`choose_upconv_impl` picks), then a table. `layers.choose_upconv_impl` cites these figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vice_gan.models import layers  # noqa: E402


def _generator(config: str, frames: int, ngf: int) -> list[tuple]:
    widths = [8 * ngf, 4 * ngf, 2 * ngf, ngf, 3]
    return [(f"G '{config}'", frames, 4 * 2**i, widths[i], widths[i + 1], 4, 1) for i in range(4)]


# (name, N, H (= W) of the input, C_in, C_out, kernel_size, padding)
LAYERS = (
    _generator("16", 8 * 16, 16)
    + _generator("32", 16 * 16, 32)
    + _generator("64", 32 * 16, 64)
    + [
        ("AE large", 32, 2 * 2**i, c, o, 3, 1)
        for i, (c, o) in enumerate([(512, 256), (256, 128), (128, 64), (64, 32), (32, 3)])
    ]
    + [
        ("AE small", 32, 8 * 2**i, c, o, 2, 0)
        for i, (c, o) in enumerate([(4, 4), (4, 16), (16, 3)])
    ]
)


def time_layer(impl: str, n: int, h: int, cin: int, cout: int, k: int, p: int, reps: int) -> float:
    """Median ms of one jitted forward + backward of the layer in form `impl`."""
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (n, h, h, cin))
    kernel = 0.05 * jax.random.normal(keys[1], (k, k, cin, cout))
    ct = jax.random.normal(keys[2], (n, 2 * h, 2 * h, cout))
    upconv = layers.UPCONV_IMPLS[impl]

    @jax.jit
    def grads(x, kernel):
        _, vjp = jax.vjp(lambda x, w: jax.nn.relu(upconv(x, w, p)), x, kernel)
        return vjp(ct)

    jax.block_until_ready(grads(x, kernel))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(grads(x, kernel))
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--impls", default="phases,gemm", help="comma-separated UpConv2x forms")
    parser.add_argument("--reps", type=int, default=5, help="timed calls per layer and form")
    parser.add_argument("--configs", default="16,32,64,AE", help="which layers: 16, 32, 64, AE")
    args = parser.parse_args()
    impls = args.impls.split(",")
    unknown = sorted(set(impls) - set(layers.UPCONV_IMPLS))
    if unknown:
        parser.error(f"unknown --impls {unknown}; choose from {sorted(layers.UPCONV_IMPLS)}")
    wanted = args.configs.split(",")
    rows = []
    for name, n, h, cin, cout, k, p in LAYERS:
        if not any(f"'{c}'" in name or (c == "AE" and name.startswith("AE")) for c in wanted):
            continue
        print(f"{name} {h}x{h}x{cin} -> {cout} ...", file=sys.stderr, flush=True)
        ms = {impl: round(time_layer(impl, n, h, cin, cout, k, p, args.reps), 1) for impl in impls}
        row = {
            "layer": name,
            "frames": n,
            "in": [h, h, cin],
            "out_channels": cout,
            "kernel": k,
            "ms": ms,
            "auto": layers.choose_upconv_impl((n, h, h, cin), cout),
            "jax": jax.__version__,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(
        f"\n{'layer':10s} {'frames':>6s} {'input -> C_out':>18s} "
        + " ".join(f"{i:>8s}" for i in impls)
        + "  auto"
    )
    for r in rows:
        shape = f"{r['in'][0]}x{r['in'][1]}x{r['in'][2]} -> {r['out_channels']}"
        times = " ".join(f"{r['ms'][i]:8.1f}" for i in impls)
        print(f"{r['layer']:10s} {r['frames']:6d} {shape:>18s} {times}  {r['auto']}")


if __name__ == "__main__":
    main()
