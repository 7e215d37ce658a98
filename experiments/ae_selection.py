"""Autoencoder selection (thesis §6.1, Table 4): six autoencoders, MSE and SSIM on test frames.

    python experiments/ae_selection.py --scale=quick --dataset=synthetic_faces \\
        --out workdirs/ae_selection --report_dir experiments/results/ae_selection_quick_synthetic

Trains SAE and VAE x small / medium / large with `train.train_autoencoder` (each in
`<out>/<type>_<size>`, resumable: a finished one is not retrained) on the training subjects'
frames, then reconstructs frames of the test subjects (every video, every `--frame_every`-th
frame; the VAE decodes its mean) and writes Table 4 as `table4.md` and `table4.csv`:
per-frame MSE and SSIM (frames in [0, 1], image_metrics), averaged over frames.

Scales: `paper` uses paper.flags's autoencoder settings (batch 32, Adam 0.005, 70k steps, full
widths); `quick` divides the widths by 2 and trains 3000 steps (about 2.5 epochs of
synthetic_faces).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AE_TYPES = ("sae", "vae")
SIZES = ("small", "medium", "large")
QUICK = {"ae_width_divisor": 2, "ae_batch": 32, "ae_lr": 0.005, "ae_num_steps": 3000}
# Thesis Table 4 (MUG, full widths, 50 epochs): (type, size) -> (MSE, SSIM).
THESIS_TABLE4 = {
    ("sae", "small"): (0.001156, 0.909136),
    ("sae", "medium"): (0.000984, 0.937786),
    ("sae", "large"): (0.00086, 0.961358),
    ("vae", "small"): (0.002331, 0.872967),
    ("vae", "medium"): (0.001905, 0.9062063),
    ("vae", "large"): (0.001277, 0.938729),
}


def _paper_overrides() -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "experiments_ablation", os.path.join(REPO, "experiments", "ablation.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    wanted = ("ae_width_divisor", "ae_batch", "ae_lr", "ae_num_steps", "ae_kl_weight")
    return {k: v for k, v in module.paper_overrides().items() if k in wanted}


def held_out_frames(data, frame_every: int):
    """uint8 frames [N, 64, 64, 3] of every video of the test subjects, every n-th frame."""
    import numpy as np

    table = data.table
    rows = np.flatnonzero(np.isin(table.subject, data.split.test_subjects))
    picks = [table.pixels[table.offsets[r] : table.offsets[r + 1] : frame_every] for r in rows]
    return np.concatenate(picks)


def reconstruction_scores(config, state, frames, batch: int = 256) -> tuple[float, float]:
    """(mean MSE, mean SSIM) of the autoencoder's reconstructions of uint8 frames [N, 64, 64, 3].

    Inference mode (BN running averages); the VAE decodes its mean (no sampling).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vice_gan import state as state_lib
    from vice_gan.datasets import input_pipeline
    from vice_gan.evaluation import image_metrics

    models = state_lib.build_models(config, axis_name=None)
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})

    @jax.jit
    def scores(x):
        recon, _, _ = models.autoencoder.apply(variables, x, None, train=False)
        a, b = (recon + 1.0) / 2.0, (x + 1.0) / 2.0
        return image_metrics.mse_per_frame(a, b), image_metrics.ssim_per_frame(a, b)

    mse, ssim = [], []
    for i in range(0, len(frames), batch):
        chunk = input_pipeline.to_unit_range(frames[i : i + batch])
        pad = batch - len(chunk)  # one compiled shape
        m, s = scores(jnp.asarray(np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:])])))
        mse.append(np.asarray(m)[: len(chunk)])
        ssim.append(np.asarray(s)[: len(chunk)])
    return float(np.concatenate(mse).mean()), float(np.concatenate(ssim).mean())


def write_table4(results: dict, out: str, notes: str) -> tuple[str, str]:
    """Writes table4.md (thesis layout, ours then the thesis's) and table4.csv."""
    os.makedirs(out, exist_ok=True)
    csv_path = os.path.join(out, "table4.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["type", "size", "mse", "ssim", "num_frames", "steps"])
        for (t, s), r in sorted(results.items()):
            w.writerow([t, s, f"{r['mse']:.6g}", f"{r['ssim']:.6g}", r["num_frames"], r["steps"]])
    names = {"sae": "Standard", "vae": "Variational"}

    def table(values) -> list[str]:
        lines = ["| Type | Small MSE | Small SSIM | Medium MSE | Medium SSIM | Large MSE | "
                 "Large SSIM |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for t in AE_TYPES:
            cells = []
            for s in SIZES:
                mse, ssim = values.get((t, s), (float("nan"), float("nan")))
                cells += [f"{mse:.6f}", f"{ssim:.4f}"]
            lines.append(f"| {names[t]} | " + " | ".join(cells) + " |")
        return lines

    ours = {k: (r["mse"], r["ssim"]) for k, r in results.items()}
    best = max(ours, key=lambda k: ours[k][1])
    lines = ["# Table 4: autoencoder variants", "", notes, "", "## This run", ""]
    lines += table(ours)
    lines += ["", f"Best SSIM: {names[best[0]]} {best[1]} (the thesis picked Standard large).", ""]
    lines += ["## Thesis (MUG)", ""] + table(THESIS_TABLE4)
    md_path = os.path.join(out, "table4.md")
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return md_path, csv_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("quick", "paper"), default="quick")
    parser.add_argument("--dataset", default="synthetic_faces")
    parser.add_argument("--data_dir", default="~/tensorflow_datasets")
    parser.add_argument("--manual_dir", default=None)
    parser.add_argument("--split_seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frame_every", type=int, default=4, help="test frames: every n-th")
    parser.add_argument("--out", required=True, help="autoencoder run directories")
    parser.add_argument("--report_dir", default=None, help="table folder (default: --out)")
    args = parser.parse_args(argv)
    from vice_gan import config as config_lib
    from vice_gan import train

    overrides = QUICK if args.scale == "quick" else _paper_overrides()
    out = os.path.abspath(args.out)
    base = config_lib.Config(
        **overrides,
        mode="train_ae",
        workdir=out,
        dataset=args.dataset,
        data_dir=os.path.abspath(os.path.expanduser(args.data_dir)),
        manual_dir=args.manual_dir,
        split_seed=args.split_seed,
        seed=args.seed,
    )
    data = train.load_data(base)
    frames = held_out_frames(data, args.frame_every)
    results = {}
    for ae_type in AE_TYPES:
        for size in SIZES:
            config = dataclasses.replace(
                base, ae_type=ae_type, ae_size=size, ae_dir=os.path.join(out, f"{ae_type}_{size}")
            )
            config_lib.validate(config)
            state = train.train_autoencoder(config, data)
            mse, ssim = reconstruction_scores(config, state, frames)
            results[(ae_type, size)] = {
                "mse": mse,
                "ssim": ssim,
                "num_frames": len(frames),
                "steps": config.ae_num_steps,
            }
            print(f"{ae_type} {size}: MSE {mse:.6f} SSIM {ssim:.4f}", flush=True)
    from vice_gan.datasets import registry

    version = registry.make_builder(args.dataset, base.data_dir).version
    notes = (
        f"Data set `{args.dataset}` (version {version}), split seed {args.split_seed}, seed "
        f"{args.seed}, scale "
        f"`{args.scale}` ({overrides}); {len(frames)} test-subject frames (every "
        f"{args.frame_every}th frame of every test video). Command: `python "
        f"experiments/ae_selection.py {' '.join(sys.argv[1:] if argv is None else argv)}`."
    )
    md, _ = write_table4(results, args.report_dir or out, notes)
    print(f"wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
