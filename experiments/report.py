"""The ablation report: thesis-style tables, bar charts, a Table-5 summary and sample strips.

    python experiments/report.py --runs DIR/runs --out DIR

reads every `<runs>/<name>/metrics.json` (written by `--mode=evaluate`, one per model x
condition x seed) and writes into `--out`: `report.md`, one bar chart per figure
(`fig_<name>.png`, Figures 7, 8, 10, 12 and the in-domain scores), sample strips per model from
the runs' `generate/*.npz` (first seed), and a copy of every metrics.json under `metrics/`, so
the report can be rebuilt from the committed files alone (`--runs <out>/metrics`).

Table 5 is computed from the numbers: for each experimental variable (training-data
composition, content encoding, fine-tuning) and figure, the main effect is the difference of the
mean over all runs at one level and at the other. Run-to-run noise is the pooled within-cell
standard deviation s over seeds (a cell is one model x condition), with sum(n_cell - 1) degrees
of freedom; an effect "exceeds noise" when |effect| > t(0.975, df) * s * sqrt(1/n_a + 1/n_b),
a two-sided 5% test. An aspect (visual quality, identity, emotion) is marked influenced when at
least one of its figures' effects exceeds noise.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil

import numpy as np

# (figure, label, better, Figure number of the thesis or None, real-clip reference figure).
FIGURES = (
    ("ssim", "SSIM", "higher", "Figure 7", None),
    ("mse", "MSE", "lower", "Figure 8", None),
    ("acd_encoder", "ACD (AE encoder)", "closer to real", "Figure 10", "acd_encoder_real"),
    ("acd_identity", "ACD (identity net)", "closer to real", None, "acd_identity_real"),
    ("cas_m", "CAS-M (FER-2013)", "higher", "Figure 12", "cas_m_real"),
    ("emotion_accuracy", "Emotion acc. (in-domain)", "higher", None, "emotion_accuracy_real"),
    ("identity_top1", "Identity top-1 (in-domain)", "higher", None, "identity_top1_real"),
)
ASPECTS = {
    "Visual Quality": ("ssim", "mse"),
    "Identity Consistency": ("acd_encoder", "acd_identity", "identity_top1"),
    "Emotion Generation": ("cas_m", "emotion_accuracy"),
}
# Experimental variable -> (run field, level a, level b).
VARIABLES = {
    "Training Data Composition": ("condition", "seen", "unseen"),
    "Content Encoding Method": ("content_encoding", "all", "single"),
    "Autoencoder Fine-Tuning": ("ae_weights", "finetune", "frozen"),
}
# Thesis Table 5: influence present (True) or absent (False).
THESIS_TABLE5 = {
    "Training Data Composition": (True, True, False),
    "Content Encoding Method": (False, True, False),
    "Autoencoder Fine-Tuning": (True, False, True),
}
MODEL_NAMES = {
    1: "Model 1 (all frames, fine-tuned)",
    2: "Model 2 (all frames, frozen)",
    3: "Model 3 (single frame, fine-tuned)",
    4: "Model 4 (single frame, frozen)",
}
CONDITIONS = ("seen", "unseen")


def load_runs(runs_dir: str) -> list[dict]:
    """Every `<runs_dir>/*/metrics.json` or `<runs_dir>/*.json`, with 'name' and 'workdir' added.

    Runs without a thesis model number (a variant outside Table 2) are skipped.
    """
    paths = sorted(glob.glob(os.path.join(runs_dir, "*", "metrics.json")))
    paths += sorted(glob.glob(os.path.join(runs_dir, "*.json")))
    runs = []
    for path in paths:
        with open(path) as f:
            run = json.load(f)
        if run.get("model") not in MODEL_NAMES:
            continue
        is_dir = os.path.basename(path) == "metrics.json"
        run["name"] = (
            os.path.basename(os.path.dirname(path))
            if is_dir
            else os.path.basename(path).removesuffix(".json")
        )
        run["workdir"] = os.path.dirname(path) if is_dir else None
        runs.append(run)
    return runs


def _value(run: dict, figure: str) -> float:
    entry = run["metrics"].get(figure)
    return float("nan") if entry is None else float(entry["value"])


def _field(run: dict, field: str) -> str:
    return run["condition"] if field == "condition" else run["variant"][field]


def cells(runs: list[dict], figure: str) -> dict[tuple[int, str], np.ndarray]:
    """(model, condition) -> values of `figure` over seeds."""
    out = {}
    for run in runs:
        out.setdefault((run["model"], run["condition"]), []).append(_value(run, figure))
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def pooled_sd(groups: list[np.ndarray]) -> tuple[float, int]:
    """Pooled within-group standard deviation and its degrees of freedom (NaNs dropped)."""
    groups = [g[np.isfinite(g)] for g in groups]
    df = sum(len(g) - 1 for g in groups if len(g) > 1)
    if df == 0:
        return float("nan"), 0
    ss = sum(float(np.sum((g - g.mean()) ** 2)) for g in groups if len(g) > 1)
    return float(np.sqrt(ss / df)), df


def effects(runs: list[dict]) -> list[dict]:
    """Main effect of every variable on every figure, with its noise threshold.

    Returns:
      one dict per (variable, figure): 'variable', 'figure', 'a', 'b' (levels), 'mean_a',
      'mean_b', 'effect' (mean_a - mean_b), 'sd' (pooled run-to-run SD), 'df', 'threshold'
      (t * SE), 'exceeds' (bool; False when the noise cannot be estimated).
    """
    from scipy import stats

    rows = []
    for figure, *_ in FIGURES:
        sd, df = pooled_sd(list(cells(runs, figure).values()))
        for variable, (field, a, b) in VARIABLES.items():
            va = np.array([_value(r, figure) for r in runs if _field(r, field) == a])
            vb = np.array([_value(r, figure) for r in runs if _field(r, field) == b])
            va, vb = va[np.isfinite(va)], vb[np.isfinite(vb)]
            if len(va) == 0 or len(vb) == 0:
                continue
            effect = float(va.mean() - vb.mean())
            threshold = float("nan")
            if df > 0:
                threshold = float(stats.t.ppf(0.975, df) * sd * np.sqrt(1 / len(va) + 1 / len(vb)))
            rows.append(
                {
                    "variable": variable,
                    "figure": figure,
                    "a": a,
                    "b": b,
                    "mean_a": float(va.mean()),
                    "mean_b": float(vb.mean()),
                    "effect": effect,
                    "sd": sd,
                    "df": df,
                    "threshold": threshold,
                    "exceeds": bool(np.isfinite(threshold) and abs(effect) > threshold),
                }
            )
    return rows


def table5(rows: list[dict]) -> dict[str, tuple[bool, ...]]:
    """Variable -> influence on (visual quality, identity, emotion), from `effects` rows."""
    out = {}
    for variable in VARIABLES:
        out[variable] = tuple(
            any(r["exceeds"] for r in rows if r["variable"] == variable and r["figure"] in figs)
            for figs in ASPECTS.values()
        )
    return out


def _fmt(x: float, digits: int = 4) -> str:
    return "-" if not np.isfinite(x) else f"{x:.{digits}f}"


def _mean_sd(values: np.ndarray, digits: int = 4) -> str:
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return "-"
    sd = f" ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else ""
    return f"{v.mean():.{digits}f}{sd}"


def _figure_table(runs: list[dict], figure: str, label: str, ref: str | None) -> list[str]:
    per_cell = cells(runs, figure)
    lines = [f"| {label} | Seen | Unseen |", "|---|---|---|"]
    for model, name in MODEL_NAMES.items():
        row = [_mean_sd(per_cell.get((model, c), np.array([]))) for c in CONDITIONS]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    if ref:
        ref_cells = cells(runs, ref)
        row = []
        for c in CONDITIONS:
            values = [ref_cells.get((m, c), np.array([])) for m in MODEL_NAMES]
            row.append(_mean_sd(np.concatenate(values)) if values else "-")
        lines.append("| real test clips (reference) | " + " | ".join(row) + " |")
    return lines


def plot_figure(runs: list[dict], figure: str, label: str, ref: str | None, path: str) -> None:
    """Grouped bars (models x condition), mean over seeds, each seed a dot, real reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_cell = cells(runs, figure)
    ref_cells = cells(runs, ref) if ref else {}
    colours = {"seen": "tab:blue", "unseen": "tab:orange"}
    fig, ax = plt.subplots(figsize=(7.6, 3.6))
    for j, condition in enumerate(CONDITIONS):
        xs = np.arange(1, 5) + (j - 0.5) * 0.38
        for x, model in zip(xs, MODEL_NAMES, strict=True):
            v = per_cell.get((model, condition), np.array([]))
            v = v[np.isfinite(v)]
            if len(v):
                ax.bar(x, v.mean(), 0.36, color=colours[condition], alpha=0.75)
                ax.plot([x] * len(v), v, "k.", ms=4)
        ax.bar(0, 0, 0, color=colours[condition], label=condition.capitalize())
        if ref:
            v = np.concatenate([ref_cells.get((m, condition), np.array([])) for m in MODEL_NAMES])
            v = v[np.isfinite(v)]
            if len(v):
                ax.axhline(
                    v.mean(), color=colours[condition], ls="--", lw=1.2,
                    label=f"real test clips ({condition})",
                )  # fmt: skip
    ax.set_xticks(range(1, 5), [f"Model {m}" for m in MODEL_NAMES])
    ax.set_ylabel(label)
    ax.set_title(f"{label}: mean over seeds (dots: seeds)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latest_npz(workdir: str | None) -> str | None:
    if not workdir:
        return None
    found = sorted(glob.glob(os.path.join(workdir, "generate", "*.npz")))
    return found[-1] if found else None


def _realism(runs: list[dict]) -> list[str]:
    """Sentences comparing the generated clips' recognisability with real clips and chance.

    The ablation's differences mean little while generated clips are not recognisable at all,
    so the report says first whether they are (a one-sample t-test of the per-run values
    against chance, 5% two-sided).
    """
    from scipy import stats

    chance = 1 / 6
    out = []
    for figure, label in (("emotion_accuracy", "emotion"), ("cas_m", "FER-2013 emotion")):
        gen = np.array([_value(r, figure) for r in runs])
        real = np.array([_value(r, figure + "_real") for r in runs])
        gen, real = gen[np.isfinite(gen)], real[np.isfinite(real)]
        if len(gen) < 2 or len(real) == 0:
            continue
        p = float(stats.ttest_1samp(gen, chance).pvalue) if gen.std() > 0 else 0.0
        if p >= 0.05:
            verdict = "not distinguishable from chance"
        else:
            verdict = "above chance" if gen.mean() > chance else "below chance"
        verdict += f" (t-test p = {p:.3f})"
        out.append(
            f"- {label} accuracy ({figure}): generated {gen.mean():.3f} over {len(gen)} runs, "
            f"real {real.mean():.3f}, chance {chance:.3f}: generated is {verdict}."
        )
    gen = np.array([_value(r, "identity_top1") for r in runs])
    real = np.array([_value(r, "identity_top1_real") for r in runs])
    subjects = {r.get("num_test_subjects") for r in runs}
    chance_id = (
        f"{1 / subjects.pop():.3f}"
        if len(subjects) == 1 and None not in subjects
        else "1 / number of test subjects"
    )
    if np.isfinite(gen).any() and np.isfinite(real).any():
        out.append(
            f"- identity top-1 (identity_top1): generated {np.nanmean(gen):.3f}, real "
            f"{np.nanmean(real):.3f}, chance {chance_id}."
        )
    return out


def _labelled_strips(path: str, strips: list[np.ndarray], names: list[str], title: str) -> None:
    """Stacks frame strips (uint8 [64, W, 3] each) into one PNG, a label left of each row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = np.concatenate(strips, axis=0)
    h, w = image.shape[:2]
    dpi = 100  # one image pixel per output pixel: frames stay sharp
    fig = plt.figure(figsize=((w + 110) / dpi, (h + 24) / dpi), dpi=dpi)
    ax = fig.add_axes([110 / (w + 110), 0, w / (w + 110), h / (h + 24)])
    ax.imshow(image, interpolation="nearest")
    ax.set_yticks([64 * i + 32 for i in range(len(names))], names, fontsize=8)
    ax.set_xticks([])
    fig.suptitle(title, fontsize=8, y=1.0, va="top")
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def sample_strips(runs: list[dict], out: str, frame_every: int = 2) -> list[str]:
    """PNG frame strips from the generate outputs of each model x condition (first seed).

    `samples_m<k>_<condition>.png`: first test subject, rows = input then the six emotions,
    columns = every `frame_every`-th frame. `samples_happiness_<condition>.png` (Figure 9
    style): happiness across the four models, same subject and input.

    Returns:
      the written file names (relative to `out`).
    """
    from vice_gan import labels, writers

    written = []
    first = {}
    for run in sorted(runs, key=lambda r: r["seed"]):
        first.setdefault((run["model"], run["condition"]), run)
    per_condition = {}
    for (model, condition), run in sorted(first.items()):
        path = _latest_npz(run.get("workdir"))
        if path is None:
            continue
        with np.load(path) as z:
            inputs, generated = z["inputs"][0], z["generated"][0]  # [T, ...], [6, T, ...]
        strips = [writers.frame_strip(r, frame_every) for r in [inputs] + list(generated)]
        name = f"samples_m{model}_{condition}.png"
        title = f"Model {model}, {condition}, seed {run['seed']}, step {run['step']}"
        _labelled_strips(os.path.join(out, name), strips, ["input"] + list(labels.EMOTIONS), title)
        written.append(name)
        per_condition.setdefault(condition, {})[model] = (inputs, generated, run)
    emotion = labels.EMOTIONS.index("happiness")  # the thesis's Figure 9 shows happiness
    for condition, models in per_condition.items():
        strips = [writers.frame_strip(next(iter(models.values()))[0], frame_every)]
        strips += [writers.frame_strip(g[emotion], frame_every) for _, g, _ in models.values()]
        names = ["input"] + [f"Model {m}" for m in models]
        name = f"samples_happiness_{condition}.png"
        title = f"happiness, {condition}"
        _labelled_strips(os.path.join(out, name), strips, names, title)
        written.append(name)
    return written


def write_report(runs_dir: str, out: str, title: str = "VICE-GAN ablation", notes: str = "") -> str:
    """Writes report.md, charts, sample strips and metrics copies into `out`; returns the path."""
    runs = load_runs(runs_dir)
    if not runs:
        raise ValueError(f"no metrics.json of a thesis model under {runs_dir}")
    os.makedirs(out, exist_ok=True)
    copies = os.path.join(out, "metrics")
    if os.path.abspath(copies) != os.path.abspath(runs_dir):
        os.makedirs(copies, exist_ok=True)
        for run in runs:
            if run["workdir"]:
                shutil.copyfile(
                    os.path.join(run["workdir"], "metrics.json"),
                    os.path.join(copies, run["name"] + ".json"),
                )
    seeds = sorted({r["seed"] for r in runs})
    first = runs[0]
    lines = [f"# {title}", ""]
    versions = sorted({str(r.get("dataset_version") or "not recorded") for r in runs})
    lines += [
        f"Data set `{first['dataset']}` (version {', '.join(versions)}), split seed "
        f"{first['split_seed']}, {len(runs)} runs: "
        f"models {sorted({r['model'] for r in runs})} x conditions "
        f"{sorted({r['condition'] for r in runs})} x seeds {seeds}; "
        f"GAN steps {sorted({r['step'] for r in runs})}. Values are mean ± SD over seeds; "
        f"evaluation clips per run: {sorted({r['metrics']['ssim']['num_clips'] for r in runs})}.",
        "",
    ]
    if notes:
        lines += [notes, ""]
    lines += ["## How close to real clips", ""] + _realism(runs) + [""]
    lines += ["## Figures", ""]
    for figure, label, better, thesis, ref in FIGURES:
        where = f" (thesis {thesis})" if thesis else " (in-domain, not in the thesis)"
        lines += [f"### {label}{where}: {better} is better", ""]
        lines += _figure_table(runs, figure, label, ref)
        chart = f"fig_{figure}.png"
        plot_figure(runs, figure, label, ref, os.path.join(out, chart))
        lines += ["", f"![{label}]({chart})", ""]
    rows = effects(runs)
    ours = table5(rows)
    lines += ["## Table 5 from the numbers", ""]
    present = {(r["model"], r["condition"]) for r in runs}
    if len(present) < len(MODEL_NAMES) * len(CONDITIONS):
        lines += [
            f"**Incomplete design: {len(present)} of {len(MODEL_NAMES) * len(CONDITIONS)} "
            "model x condition cells have runs, so the main effects below mix the variables.**",
            "",
        ]
    if rows and np.isfinite(rows[0]["threshold"]):
        lines += [
            f"Noise: pooled run-to-run SD over seeds, {rows[0]['df']} degrees of freedom; an "
            "effect counts when |effect| > t(0.975, df) x SE (two-sided 5%). ✓ = influence, "
            "- = none; the thesis's Table 5 in brackets.",
            "",
        ]
    else:
        lines += ["Only one seed per cell: run-to-run noise cannot be estimated, no ✓.", ""]
    aspects = list(ASPECTS)
    lines += ["| Experimental variable | " + " | ".join(aspects) + " | agrees |"]
    lines += ["|---|" + "---|" * (len(aspects) + 1)]
    for variable, marks in ours.items():
        thesis = THESIS_TABLE5[variable]
        mark = {True: "✓", False: "-"}
        cells_ = [f"{mark[m]} ({mark[t]})" for m, t in zip(marks, thesis, strict=True)]
        agree = sum(m == t for m, t in zip(marks, thesis, strict=True))
        lines.append(f"| {variable} | " + " | ".join(cells_) + f" | {agree}/3 |")
    lines += ["", "Effects (level a minus level b, mean over all runs at each level):", ""]
    lines += ["| variable | figure | a | b | mean a | mean b | effect | noise threshold | ✓ |"]
    lines += ["|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['variable']} | {r['figure']} | {r['a']} | {r['b']} | {_fmt(r['mean_a'])} | "
            f"{_fmt(r['mean_b'])} | {_fmt(r['effect'])} | {_fmt(r['threshold'])} | "
            f"{'✓' if r['exceeds'] else '-'} |"
        )
    # Rebuilt from metrics copies (no run directories): keep the strips written earlier.
    strips = sample_strips(runs, out) or sorted(
        os.path.basename(p) for p in glob.glob(os.path.join(out, "samples_*.png"))
    )
    if strips:
        lines += ["", "## Samples (first seed, first test subject)", ""]
        lines += [
            "Per model: rows are the input clip, then anger, disgust, fear, happiness, sadness, "
            "surprise; every 2nd frame. `samples_happiness_*`: the input, then Models 1-4 asked "
            "for happiness (thesis Figure 9).",
            "",
        ]
        lines += [f"![{name}]({name})" for name in strips]
    path = os.path.join(out, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="folder of run dirs (or metrics copies)")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--title", default="VICE-GAN ablation")
    parser.add_argument("--notes", default="", help="a paragraph under the title")
    args = parser.parse_args()
    print(write_report(args.runs, args.out, args.title, args.notes))


if __name__ == "__main__":
    main()
