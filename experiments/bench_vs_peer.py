"""Our GAN step against the PyTorch peer, run alternately on the same machine.

Usage:
  python experiments/bench_vs_peer.py                              # configs 16, 32, 64; 3 pairs
  python experiments/bench_vs_peer.py --configs 16 --pairs 5
  python experiments/bench_vs_peer.py --torch_python /path/to/venv/bin/python \\
      --peer_script /path/to/torch_peer.py

For each configuration (see experiments/benchmark.py: '16' = ngf = ndf = 16 with 8 clips + 8
images per step, '32' = 32 with 16 + 16, '64' = 64 with 32 + 32; T = 16) it runs the peer
(`torch_peer.py --ngf --ndf --video_batch --image_batch --threads`, one process) and then ours
(`benchmark.py --configs <c> --parts gan`, one process), --pairs times: A B A B, so that both
see the same machine load. Each process reports its own median seconds per step and peak RSS
(getrusage), and the 1-minute load average before it started (other processes on a
shared machine slow both; compare ratios, not absolute times, when it is not quiet); a pair's ratio is peer s/step / our s/step (> 1: we are faster). Prints one JSON
line per run and per configuration summary (median ratio over pairs), then a table.

Note the peer renders the fakes twice per step (once without grad for the discriminators, once
with grad for the generator); our step renders once and differentiates that render (steps.py,
`reuse_fakes`). --render_twice makes ours render twice as well.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CONFIGS = {"16": (16, 8, 8), "32": (32, 16, 16), "64": (64, 32, 32)}
DEFAULT_PEER = os.path.join(os.path.dirname(REPO), "shared", "bench", "torch_peer.py")


def last_json(stdout: str, **match) -> dict:
    """The last JSON object line of a process's stdout whose keys equal `match`."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            row = json.loads(line)
            if all(row.get(k) == v for k, v in match.items()):
                return row
    raise RuntimeError(f"no JSON result line matching {match} in:\n{stdout[-2000:]}")


def run(cmd: list[str], timeout: float) -> tuple[str, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout, time.perf_counter() - start


def run_peer(args, name: str) -> dict:
    width, bv, bi = CONFIGS[name]
    cmd = [args.torch_python, args.peer_script, "--ngf", str(width), "--ndf", str(width)]
    cmd += ["--video_batch", str(bv), "--image_batch", str(bi), "--threads", str(args.threads)]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.peer_warmup)]
    load = os.getloadavg()[0]
    stdout, wall = run(cmd, args.timeout)
    row = last_json(stdout, impl="pytorch-cpu")
    return {
        "loadavg_1min_before": round(load, 2),
        "sec_per_step": row["sec_per_step_median"],
        "peak_rss_mb": row["peak_rss_mb"],
        "step_times": row["step_times"],
        "process_s": round(wall, 1),
    }


def run_ours(args, name: str) -> dict:
    cmd = [sys.executable, os.path.join(HERE, "benchmark.py"), "--configs", name, "--parts", "gan"]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.render_twice:
        cmd.append("--render_twice")
    load = os.getloadavg()[0]
    stdout, wall = run(cmd, args.timeout)
    row = last_json(stdout, part="gan", config=name)
    return {
        "loadavg_1min_before": round(load, 2),
        "sec_per_step": row["sec_per_step_median"],
        "peak_rss_mb": row["peak_rss_mb"],
        "step_times": row["step_times"],
        "compile_s": row["compile_s"],
        "process_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="16,32,64", help=f"comma list of {list(CONFIGS)}")
    parser.add_argument(
        "--pairs",
        type=int,
        default=3,
        help="peer/ours runs per config (>= 3 where time allows; 2 at '64')",
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=2, help="our untimed steps after compiling")
    parser.add_argument("--peer_warmup", type=int, default=3, help="the peer's untimed steps")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--torch_python", default="/work/torchvenv/bin/python")
    parser.add_argument("--peer_script", default=DEFAULT_PEER)
    parser.add_argument("--render_twice", action="store_true", help="ours renders twice too")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per process")
    args = parser.parse_args()
    if not os.path.exists(args.peer_script):
        parser.error(f"--peer_script {args.peer_script} does not exist")
    names = args.configs.split(",")
    for name in names:
        if name not in CONFIGS:
            parser.error(f"unknown config {name!r}; choose from {list(CONFIGS)}")

    summaries = []
    for name in names:
        pairs = []
        for i in range(args.pairs):
            peer = run_peer(args, name)
            print(json.dumps({"config": name, "pair": i, "impl": "peer", **peer}), flush=True)
            ours = run_ours(args, name)
            print(json.dumps({"config": name, "pair": i, "impl": "ours", **ours}), flush=True)
            ratio = peer["sec_per_step"] / ours["sec_per_step"]
            pairs.append((peer, ours, ratio))
            print(json.dumps({"config": name, "pair": i, "ratio": round(ratio, 3)}), flush=True)
        summary = {
            "config": name,
            "pairs": args.pairs,
            "ratios": [round(r, 3) for _, _, r in pairs],
            "median_ratio": round(statistics.median(r for _, _, r in pairs), 3),
            "peer_sec_per_step_median": statistics.median(p["sec_per_step"] for p, _, _ in pairs),
            "ours_sec_per_step_median": statistics.median(o["sec_per_step"] for _, o, _ in pairs),
            "peer_peak_rss_mb": max(p["peak_rss_mb"] for p, _, _ in pairs),
            "ours_peak_rss_mb": max(o["peak_rss_mb"] for _, o, _ in pairs),
            "ours_compile_s_median": statistics.median(o["compile_s"] for _, o, _ in pairs),
            "ours_renders_per_step": 2 if args.render_twice else 1,
        }
        print(json.dumps({"summary": True, **summary}), flush=True)
        summaries.append(summary)

    print(
        f"\n{'config':>6} {'peer s/step':>11} {'ours s/step':>11} {'ratios (peer/ours)':>22} "
        f"{'median':>7} {'peer RSS':>9} {'ours RSS':>9} {'compile s':>9}"
    )
    for s in summaries:
        ratios = " ".join(f"{r:.2f}" for r in s["ratios"])
        print(
            f"{s['config']:>6} {s['peer_sec_per_step_median']:>11.3f} "
            f"{s['ours_sec_per_step_median']:>11.3f} {ratios:>22} {s['median_ratio']:>7.2f} "
            f"{s['peer_peak_rss_mb']:>9.0f} {s['ours_peak_rss_mb']:>9.0f} "
            f"{s['ours_compile_s_median']:>9.1f}"
        )


if __name__ == "__main__":
    main()
