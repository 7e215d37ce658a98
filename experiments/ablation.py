"""The thesis's ablation (Table 2 x §5.3.1): four models under Seen and Unseen, over seeds.

    python experiments/ablation.py --scale=quick --dataset=synthetic_faces \\
        --out workdirs/ablation_quick --report_dir experiments/results/quick_synthetic
    python experiments/ablation.py --scale=paper --dataset=mug --manual_dir=/data/MUG \\
        --out runs/ablation --seeds 0 1 2

For each seed: one autoencoder (`<out>/ae_seed<s>`, trained on training subjects only, shared by
the eight variants like the thesis's), then every row of VARIANTS under every condition in
`<out>/runs/m<k>_<condition>_seed<s>`: GAN training, `--mode=evaluate` (metrics.json) and
`--mode=generate` (sample strips). Seeds run one after the other, so the first complete seed
comes first. Then `report.write_report` writes report.md, charts and strips to --report_dir.

Resumable: a run whose metrics.json matches its configuration (same config fingerprint, final
step, current schema) and has generate outputs is skipped; a killed run resumes from its last
checkpoint (train_* resume automatically); a finished run missing only its samples renders them.

Scales: `paper` takes experiments/paper.flags as is (the thesis's widths, batches and steps);
`quick` is QUICK below: small widths and few steps, about 3.5-5 minutes per run on 2 CPU cores
(the committed report: 16 runs in 75 min of running, two autoencoders included).
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import importlib.util
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Thesis Table 2 (the numbering governs; the thesis's prose swaps frozen/fine-tuned in places).
VARIANTS = (
    {"model": 1, "content_encoding": "all", "ae_weights": "finetune"},
    {"model": 2, "content_encoding": "all", "ae_weights": "frozen"},
    {"model": 3, "content_encoding": "single", "ae_weights": "finetune"},
    {"model": 4, "content_encoding": "single", "ae_weights": "frozen"},
)
CONDITIONS = ("seen", "unseen")  # thesis §5.3.1
# Quick scale: Config overrides on top of the defaults (CPU minutes per run).
QUICK = {
    "video_length": 16,
    "frame_stride": 2,
    # The autoencoder of experiments/ae_selection.py --scale=quick (Standard large, widths / 2).
    "ae_type": "sae",
    "ae_size": "large",
    "ae_width_divisor": 2,
    "ae_batch": 32,
    "ae_num_steps": 3000,
    # GAN: widths 16 (paper 64), batches 8 (paper 32), 400 steps (paper 100k). The quickstart
    # (same widths) shows a blur at step 250 and a head with the input's skin tone and hair at
    # 500; at widths 8 and 200 steps the samples were still noise. 400 fits about an hour.
    "ngf": 16,
    "ndf": 16,
    "video_batch": 8,
    "image_batch": 8,
    "num_steps": 400,
    "checkpoint_every": 200,
    "keep_checkpoints": 1,
    "sample_every": 0,
    "log_every": 50,
    "num_generate": 2,
}


def paper_overrides(path: str = os.path.join(REPO, "experiments", "paper.flags")) -> dict:
    """Config overrides from a flagfile's `--name=value` lines (comments, --flagfile, --mode
    and --workdir skipped), typed like the Config fields."""
    from vice_gan import config as config_lib

    types = {f.name: type(f.default) for f in dataclasses.fields(config_lib.Config)}
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("--") or "=" not in line:
                continue
            name, value = line[2:].split("=", 1)
            if name in ("flagfile", "mode", "workdir") or name not in types:
                continue
            kind = types[name]
            if kind is bool:
                out[name] = value.lower() in ("1", "true", "yes")
            elif kind in (int, float):
                out[name] = kind(value)
            else:
                out[name] = value
    return out


def plan(args: argparse.Namespace, scale: dict | None = None) -> list[tuple[int, dict, object]]:
    """Every run as (seed, variant row, Config), in execution order; all validated.

    Args:
      args: the parsed command line (scale, dataset, seeds, out, only, ...).
      scale: Config overrides replacing the --scale's (tests use tiny widths).
    """
    from vice_gan import config as config_lib

    if scale is None:
        scale = QUICK if args.scale == "quick" else paper_overrides()
    out = os.path.abspath(args.out)
    runs = []
    for seed in args.seeds:
        for variant in VARIANTS:
            for condition in CONDITIONS:
                name = f"m{variant['model']}_{condition}_seed{seed}"
                config = config_lib.Config(
                    **{
                        **scale,
                        "mode": "all",
                        "dataset": args.dataset,
                        "data_dir": os.path.abspath(os.path.expanduser(args.data_dir)),
                        "manual_dir": args.manual_dir,
                        "split_seed": args.split_seed,
                        "seed": seed,
                        "condition": condition,
                        "content_encoding": variant["content_encoding"],
                        "ae_weights": variant["ae_weights"],
                        "workdir": os.path.join(out, "runs", name),
                        "ae_dir": os.path.join(out, f"ae_seed{seed}"),
                    }
                )
                config_lib.validate(config)
                if not args.only or any(fnmatch.fnmatch(name, p) for p in args.only):
                    runs.append((seed, variant, config))
    return runs


def _load_report():
    spec = importlib.util.spec_from_file_location(
        "experiments_report", os.path.join(REPO, "experiments", "report.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_state(config) -> str:
    """'done', 'generate' (evaluated, samples missing) or 'todo' for a run's workdir."""
    from vice_gan import config as config_lib
    from vice_gan.evaluation import evaluate

    path = os.path.join(config.workdir, "metrics.json")
    try:
        with open(path) as f:
            metrics = json.load(f)
    except (OSError, ValueError):
        return "todo"
    matches = (
        metrics.get("schema_version") == evaluate.SCHEMA_VERSION
        and metrics.get("config_fingerprint") == config_lib.fingerprint(config, "gan")
        and metrics.get("step") == config.num_steps
    )
    if not matches:
        return "todo"
    generated = os.path.join(config.workdir, "generate")
    has_npz = os.path.isdir(generated) and any(n.endswith(".npz") for n in os.listdir(generated))
    return "done" if has_npz else "generate"


def run_all(
    args: argparse.Namespace,
    scale: dict | None = None,
    in_domain_settings=None,
    compilation_cache: bool = True,
) -> str:
    """Trains, evaluates and renders every planned run that is not finished, then reports.

    Args:
      scale: Config overrides replacing the --scale's (tests use tiny widths).
      in_domain_settings: in_domain.TrainSettings for evaluate (tests shrink them).
      compilation_cache: use a persistent JAX compilation cache in <out>/jax_cache (tests
        switch it off: it is process-wide).

    Returns:
      the report's path.
    """
    import jax

    from vice_gan import train, xla_options
    from vice_gan.evaluation import evaluate

    runs = plan(args, scale)
    if compilation_cache and jax.config.jax_compilation_cache_dir is None:
        # Runs that differ only in seed or condition compile the same steps: a persistent
        # compilation cache shared by the study compiles each of them once.
        xla_options.use_compilation_cache(os.path.join(os.path.abspath(args.out), "jax_cache"))
    data = None
    t_start = time.perf_counter()
    for i, (_, _, config) in enumerate(runs):
        state = run_state(config)
        label = f"[{i + 1}/{len(runs)}] {os.path.basename(config.workdir)}"
        if state == "done":
            print(f"{label}: finished earlier, skipped", flush=True)
            continue
        t0 = time.perf_counter()
        if data is None:  # one copy of the data set in memory for every run
            data = train.load_data(config)
        if state == "todo":
            train.train_autoencoder(config, data)  # a no-op once this seed's AE is trained
            train.train_gan(config, data)
            if in_domain_settings is None:
                evaluate.evaluate(config, data)
            else:
                evaluate.evaluate(config, data, in_domain_settings=in_domain_settings)
        evaluate.generate_samples(config, data)
        jax.clear_caches()  # each run compiles its own steps; keep memory flat over 16 runs
        print(
            f"{label}: done in {time.perf_counter() - t0:.0f} s "
            f"(total {(time.perf_counter() - t_start) / 60:.1f} min)",
            flush=True,
        )
    used = scale or (QUICK if args.scale == "quick" else None)
    notes = f"Scale `{args.scale}`: " + (
        f"Config overrides {json.dumps(used)}." if used else "experiments/paper.flags."
    )
    report = _load_report()
    path = report.write_report(
        os.path.join(os.path.abspath(args.out), "runs"),
        args.report_dir or args.out,
        title=f"VICE-GAN ablation, {args.scale} scale, {args.dataset}",
        notes=notes,
    )
    print(f"report: {path}")
    return path


def make_parser() -> argparse.ArgumentParser:
    """The command line (also used by tests to build argument namespaces)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("quick", "paper"), default="quick")
    parser.add_argument("--dataset", default="synthetic_faces")
    parser.add_argument("--data_dir", default="~/tensorflow_datasets")
    parser.add_argument("--manual_dir", default=None, help="MUG / video_folder raw data")
    parser.add_argument("--split_seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help=">= 2 for noise")
    parser.add_argument("--out", required=True, help="run directories go to OUT/runs/")
    parser.add_argument("--report_dir", default=None, help="report folder (default: --out)")
    parser.add_argument(
        "--only", nargs="+", default=None, help="run names to do, glob patterns (e.g. 'm4_*')"
    )
    parser.add_argument("--dry_run", action="store_true", help="print the plan and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    from vice_gan import config as config_lib

    try:
        runs = plan(args)
    except config_lib.ConfigError as e:
        parser.error(str(e))
    if args.dry_run:
        for _, variant, config in runs:
            print(f"{os.path.basename(config.workdir)}: {run_state(config)} {variant}")
        return 0
    if len(args.seeds) < 2:
        print("warning: one seed: the report cannot estimate run-to-run noise", file=sys.stderr)
    run_all(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
