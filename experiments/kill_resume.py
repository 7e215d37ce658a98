"""SIGKILL training at random moments, restart it with the same command, compare the bits.

    python experiments/kill_resume.py --kills=24 --root=/tmp/kill_resume
    python experiments/kill_resume.py --target=ablation --kills=6 --root=/tmp/kill_ablation

Targets:
  train     autoencoder pre-training, then GAN training (`python -m vice_gan.main
            --mode=train_ae`, then `--mode=train`, tiny config, a checkpoint every step),
            a third of the kills on the first.
  ablation  experiments/ablation.py on a tiny scale (one seed, model 4 seen + unseen: an
            autoencoder and two GAN runs, each evaluated and rendered).

First an uninterrupted reference run (every checkpoint kept). Then the same command is started
again and again in a fresh directory; each start is SIGKILLed, half of the time at a uniformly
random moment of what is left of the run, half as soon as a checkpoint write is seen in
progress (its temporary directory has appeared), until the kills are spent and a start runs to
the end. After every kill the newest complete checkpoint of each stage directory must equal the
reference's checkpoint of the same step, bit for bit ("resume matched": the point the next
start resumes from is exact); at the end the final checkpoints (and, for the ablation, every
metrics.json) must equal the reference's. If a run ends before all kills are spent, another
episode starts in a fresh directory.

Prints one line per kill and a summary; the exit status is 0 iff everything matched.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

from absl import logging

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from vice_gan import checkpointing  # noqa: E402 (after the path set-up, for a source checkout)

TINY = {
    "dataset": "synthetic_faces/small",
    "ngf": 4,
    "ndf": 4,
    "video_batch": 2,
    "image_batch": 2,
    "video_length": 13,
    "ae_size": "small",
    "ae_width_divisor": 8,
    "ae_batch": 4,
    "checkpoint_every": 1,
    "sample_every": 0,
    "log_every": 1,
}
# Ablation child: the ablation's own driver on a tiny scale, model 4 only, one seed.
ABLATION_CHILD = """
import importlib.util, sys
from absl import logging
logging.set_verbosity(logging.INFO)  # 'resumed from step' lines, counted per episode
spec = importlib.util.spec_from_file_location("ablation", sys.argv[1])
ablation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation)
scale = dict({scale}, num_generate=1)
args = ablation.make_parser().parse_args(sys.argv[2:])
ablation.run_all(args, scale=scale)
"""


def child_env(cache: str) -> dict:
    """Environment of every child: CPU, and a persistent XLA cache so restarts are cheap."""
    return {
        **os.environ,
        "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
        "JAX_COMPILATION_CACHE_DIR": cache,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


class Target:
    """One resumable command: how to build it for a directory, and which stage directories
    (holding `checkpoints/`) it writes."""

    def __init__(self, name: str, make_cmd, stage_dirs, steps: int):
        self.name, self.make_cmd, self.stage_dirs, self.steps = name, make_cmd, stage_dirs, steps


def train_targets(data_dir: str, ae_steps: int, gan_steps: int, keep: int) -> list[Target]:
    """The two stages of training as separate commands (the GAN one reads the AE's dir)."""
    base = [sys.executable, "-m", "vice_gan.main", f"--data_dir={data_dir}"]
    base += [f"--{k}={v}" for k, v in TINY.items()]

    def ae_cmd(root, keep_all):
        k = 1000 if keep_all else keep
        return base + [
            "--mode=train_ae",
            f"--workdir={root}",
            f"--ae_dir={root}/ae",
            f"--ae_num_steps={ae_steps}",
            f"--keep_checkpoints={k}",
        ]

    def gan_cmd(root, keep_all):
        k = 1000 if keep_all else keep
        return base + [
            "--mode=train",
            f"--workdir={root}",
            f"--ae_dir={root}/ae",
            f"--num_steps={gan_steps}",
            f"--keep_checkpoints={k}",
        ]

    return [
        Target("ae", ae_cmd, lambda root: [os.path.join(root, "ae")], ae_steps),
        Target("gan", gan_cmd, lambda root: [root], gan_steps),
    ]


def ablation_target(data_dir: str, ae_steps: int, gan_steps: int) -> Target:
    scale = {**TINY, "ae_num_steps": ae_steps, "num_steps": gan_steps, "keep_checkpoints": 1000}
    script = ABLATION_CHILD.format(scale=repr(scale))
    names = ("m4_seen_seed0", "m4_unseen_seed0")

    def cmd(root, keep_all):
        del keep_all  # the ablation keeps its own --keep_checkpoints (the scale's)
        return [
            sys.executable,
            "-c",
            script,
            os.path.join(REPO, "experiments", "ablation.py"),
            "--dataset=synthetic_faces/small",
            f"--data_dir={data_dir}",
            "--seeds",
            "0",
            "--out",
            root,
            "--only",
            "m4_*",
        ]

    def dirs(root):
        return [os.path.join(root, "ae_seed0")] + [os.path.join(root, "runs", n) for n in names]

    return Target("ablation", cmd, dirs, gan_steps)


def same_bits(directory: str, reference: str, step: int | None = None) -> bool:
    """Whether a checkpoint equals the reference's at the same step (latest if None)."""
    step_a, xs = checkpointing.read_arrays(directory, step)
    _, ys = checkpointing.read_arrays(reference, step_a)
    return xs.keys() == ys.keys() and all(xs[k].tobytes() == ys[k].tobytes() for k in xs)


def temporary_dirs(dirs: list[str]) -> set[str]:
    """Temporary step directories: a checkpoint write in progress, or one a kill cut short."""
    return {
        p
        for d in dirs
        for p in glob.glob(os.path.join(d, "checkpoints", "*.orbax-checkpoint-tmp*"))
    }


def run_once(cmd, env, log, dirs, mode, budget_s, rng) -> tuple[bool, float, float | None]:
    """Starts `cmd`; SIGKILLs it per `mode` ('random', 'write' or None: let it finish).

    'random' kills at a uniform moment in [0, budget_s] seconds. 'write' kills during the n-th
    checkpoint write, n uniform in [1, budget_s]: while a temporary step directory exists that
    is not the leftover of an earlier kill (those are removed when the run opens its checkpoint
    manager).

    Returns:
      (killed, seconds it ran, seconds until its first new checkpoint or None).
    """
    t0 = time.perf_counter()
    stale, seen = temporary_dirs(dirs), set()
    start_progress, first_progress = progress(dirs), None
    # Which write to cut: a random one of those left, so that write kills also make progress.
    skip = rng.randrange(max(int(budget_s), 1)) if mode == "write" else 0
    with open(log, "a") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = t0 + rng.uniform(0.0, budget_s) if mode == "random" else float("inf")
        while proc.poll() is None:
            now = time.perf_counter()
            if first_progress is None and progress(dirs) > start_progress:
                first_progress = now - t0
            if mode == "write":
                current = temporary_dirs(dirs)
                stale &= current
                seen |= current - stale
                if len(seen) > skip and current - stale:
                    time.sleep(rng.uniform(0.0, 0.03))  # somewhere inside the write
                    break
            if now >= deadline:
                break
            time.sleep(0.002)
        killed = proc.poll() is None and mode is not None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    if not killed and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed with {proc.returncode}; see {log}")
    return killed, time.perf_counter() - t0, first_progress


def reference_run(target: Target, root: str, env: dict) -> dict:
    """Runs the target uninterrupted in `root` (keeping every checkpoint); times it."""
    t0 = time.perf_counter()
    log = os.path.join(root, f"{target.name}.log")
    os.makedirs(root, exist_ok=True)
    proc = subprocess.Popen(
        target.make_cmd(root, True),
        cwd=REPO,
        env=env,
        stdout=open(log, "a"),
        stderr=subprocess.STDOUT,
    )
    first = None
    while proc.poll() is None:
        if first is None and any(checkpointing.latest_step(d) for d in target.stage_dirs(root)):
            first = time.perf_counter() - t0
        time.sleep(0.01)
    if proc.returncode != 0:
        raise RuntimeError(f"reference {target.name} failed; see {log}")
    total = time.perf_counter() - t0
    first = first or total
    return {"total": total, "startup": first, "step": (total - first) / max(target.steps - 1, 1)}


def progress(dirs: list[str]) -> int:
    return sum(checkpointing.latest_step(d) or 0 for d in dirs)


def kill_target(target, ref_root, work_root, env, kills, timing, rng, results) -> None:
    """Kills restarts of `target` `kills` times (episodes as needed); appends to `results`."""
    episode = 0
    os.makedirs(work_root, exist_ok=True)
    while kills > 0 or episode == 0:
        episode += 1
        root = os.path.join(work_root, f"{target.name}_ep{episode}")
        shutil.rmtree(root, ignore_errors=True)
        if target.name == "gan":  # the GAN stage starts from the (verified) killed AE run
            shutil.copytree(os.path.join(work_root, "ae_final", "ae"), os.path.join(root, "ae"))
        dirs, refs = target.stage_dirs(root), target.stage_dirs(ref_root)
        log = os.path.join(work_root, f"{target.name}_ep{episode}.log")
        # At most half as many kills as steps per episode, so they spread over whole runs
        # instead of piling up at the last step.
        episode_kills = min(kills, max(2, target.steps * len(dirs) // 2))
        while True:
            mode = None if episode_kills <= 0 else rng.choice(["random", "write"])
            left = max(target.steps * len(dirs) - progress(dirs), 1)
            budget = timing["startup"] + left * timing["step"]
            # 'random': a moment of the expected time left; 'write': one of the writes left.
            limit = left if mode == "write" else budget
            killed, took, first = run_once(
                target.make_cmd(root, False), env, log, dirs, mode, limit, rng
            )
            if first is not None:  # restarts load compiled code from the cache: faster
                timing["startup"] = min(timing["startup"], max(first - timing["step"], 0.5))
            if not killed:
                break
            kills, episode_kills = kills - 1, episode_kills - 1
            matched, at = [], []
            for d, r in zip(dirs, refs, strict=True):
                step = checkpointing.latest_step(d)
                at.append(step)
                if step is not None:
                    matched.append(same_bits(d, r, step))
            ok = all(matched)
            results["resumes"].append(ok)
            print(
                f"  {target.name} ep{episode}: killed ({mode:6s}) after {took:5.1f} s; resumes "
                f"from {at}: {'matched' if ok else 'MISMATCH'}",
                flush=True,
            )
        final = all(same_bits(d, r) for d, r in zip(dirs, refs, strict=True))
        if target.name == "ablation":
            final = final and same_metrics(root, ref_root)
        results["finals"].append(final)
        text = open(log).read()
        print(
            f"  {target.name} ep{episode}: finished; final state bit-identical: {final} (log: "
            f"{text.count('resumed from step')} resumes, "
            f"{text.count('finished earlier, skipped')} finished runs skipped)",
            flush=True,
        )
        if target.name == "ae":
            shutil.rmtree(os.path.join(work_root, "ae_final"), ignore_errors=True)
            shutil.copytree(root, os.path.join(work_root, "ae_final"))


def same_metrics(root: str, ref_root: str) -> bool:
    """Every run's metrics.json equal to the reference's (figures and step)."""
    paths = sorted(glob.glob(os.path.join(ref_root, "runs", "*", "metrics.json")))
    for path in paths:
        other = os.path.join(root, os.path.relpath(path, ref_root))
        if not os.path.exists(other):
            return False
        a, b = json.load(open(path)), json.load(open(other))
        if a.get("metrics") != b.get("metrics") or a.get("step") != b.get("step"):
            return False
    return bool(paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("train", "ablation"), default="train")
    parser.add_argument("--kills", type=int, default=24, help="SIGKILLs in all (>= 20)")
    parser.add_argument("--root", default="/tmp/vice_gan_kill_resume")
    parser.add_argument("--ae_steps", type=int, default=10)
    parser.add_argument("--gan_steps", type=int, default=10)
    parser.add_argument("--keep", type=int, default=2, help="--keep_checkpoints of killed runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.ERROR)  # Orbax's warnings while reading checkpoints
    rng = random.Random(args.seed)
    root = os.path.abspath(args.root)
    shutil.rmtree(root, ignore_errors=True)
    data_dir, cache = os.path.join(root, "tfds"), os.path.join(root, "xla_cache")
    env = child_env(cache)
    results = {"resumes": [], "finals": []}
    t0 = time.perf_counter()
    if args.target == "train":
        targets = train_targets(data_dir, args.ae_steps, args.gan_steps, args.keep)
        shares = [args.kills // 3, args.kills - args.kills // 3]
    else:
        targets = [ablation_target(data_dir, args.ae_steps, args.gan_steps)]
        shares = [args.kills]
    ref_root = os.path.join(root, "reference")
    for target, kills in zip(targets, shares, strict=True):
        timing = reference_run(target, ref_root, env)
        print(
            f"reference {target.name}: {timing['total']:.1f} s (first checkpoint after "
            f"{timing['startup']:.1f} s, {timing['step']:.2f} s/step)",
            flush=True,
        )
        kill_target(
            target, ref_root, os.path.join(root, "killed"), env, kills, timing, rng, results
        )
    n, matched = len(results["resumes"]), sum(results["resumes"])
    finals = results["finals"]
    print(
        f"\n{args.target}: {n} SIGKILLs; resumes matched the uninterrupted run: {matched}/{n}; "
        f"final checkpoints bit-identical: {sum(finals)}/{len(finals)} episodes "
        f"({(time.perf_counter() - t0) / 60:.1f} min)"
    )
    return 0 if matched == n and all(finals) else 1


if __name__ == "__main__":
    sys.exit(main())
