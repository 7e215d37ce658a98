"""CAS-H (thesis §5.4.5): blind human rating of generated clips, and its scorer.

Export (N clips per emotion per run, as GIFs, plus a static rating page):

    python -m vice_gan.evaluation.human_rating export --runs RUN_DIR [RUN_DIR ...] \\
        --per_emotion 10 --out ratings/ --seed 0

writes `ratings/page/` (index.html + clips/<random hex>.gif: share this folder only) and
`ratings/key.json` (which clip is which model and emotion: keep it hidden). Each clip is a test
subject's evaluation input translated into the emotion, as in `--mode=evaluate`; the clip order
is shuffled with --seed; names are random and reveal nothing. Raters open index.html, click one
of six emotion buttons per clip, and save their answers (a JSON file, downloaded through a Blob
link). The page's test hook `index.html?autotest=SEED` is documented in rating_page.html.

Score (per-emotion and per-model accuracy, Figure 13/16 style, markdown + PNG):

    python -m vice_gan.evaluation.human_rating score --key ratings/key.json \\
        --answers a.json [b.json ...] [--out DIR]

A model's CAS-H is the mean over emotions of the per-emotion accuracy (the thesis averages the
emotions' accuracies), pooled over raters.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import secrets
import sys

import numpy as np

from vice_gan import labels

KEY_FORMAT = "vice-gan-rating-key/1"
ANSWERS_FORMAT = "vice-gan-ratings/1"
TEMPLATE = "rating_page.html"


class RatingError(ValueError):
    """A user-facing problem with an export or with answer files."""


def write_page(items: list[dict], out: str, seed: int) -> dict:
    """Writes a blind rating page for already generated clips.

    Args:
      items: one dict per clip: 'frames' uint8 [T, H, W, 3], 'model' (label), 'emotion' (name
        in labels.EMOTIONS), plus any JSON-able details (subject, input emotion, run).
      out: export folder; gets page/index.html, page/clips/*.gif and key.json.
      seed: shuffles the clip order.

    Returns:
      the key (also written to out/key.json).
    Raises:
      RatingError: `out` already holds an export, or an item's emotion is unknown.
    """
    from vice_gan import writers

    key_path = os.path.join(out, "key.json")
    if os.path.exists(key_path) or os.path.exists(os.path.join(out, "page")):
        raise RatingError(f"{out} already holds an export; choose a new --out")
    order = np.random.default_rng(seed).permutation(len(items))
    clips = {}
    names = []
    for i in order:
        item = items[int(i)]
        if item["emotion"] not in labels.EMOTIONS:
            raise RatingError(f"unknown emotion {item['emotion']!r}")
        name = secrets.token_hex(8) + ".gif"  # random: the name must not encode the order
        writers.write_gif(os.path.join(out, "page", "clips", name), item["frames"])
        clips[name] = {k: v for k, v in item.items() if k != "frames"}
        names.append(name)
    page_id = secrets.token_hex(6)
    config = {"page_id": page_id, "clips": names, "emotions": list(labels.EMOTIONS)}
    template = importlib.resources.files("vice_gan.evaluation").joinpath(TEMPLATE).read_text()
    # "</" cannot occur in JSON of hex names and emotion words, so the script block is safe.
    html = template.replace("__CONFIG_JSON__", json.dumps(config))
    with open(os.path.join(out, "page", "index.html"), "w") as f:
        f.write(html)
    key = {"format": KEY_FORMAT, "page_id": page_id, "seed": seed, "clips": clips}
    writers.write_json(key_path, key)
    return key


def _model_label(config, used: set[str]) -> str:
    from vice_gan.evaluation import evaluate

    number = evaluate.THESIS_MODELS.get((config.content_encoding, config.ae_weights))
    label = f"m{number}_{config.condition}" if number else os.path.basename(config.workdir)
    if label in used:
        label = f"{label}_{os.path.basename(config.workdir)}"
    used.add(label)
    return label


def export(runs: list[str], per_emotion: int, out: str, seed: int) -> dict:
    """Generates `per_emotion` clips per emotion for every run and writes the rating page.

    Clips are evaluation inputs of test subjects (input_pipeline.eval_pairs) translated into
    the emotion; when a run has fewer evaluation pairs of an emotion than `per_emotion`, pairs
    repeat with other motion noise. When no test subject evaluates an emotion (possible under
    'seen' with few test subjects), inputs of other pairs are used and the key records
    `held_out_emotion: false`.

    Returns:
      the key (see `write_page`).
    """
    import jax

    from vice_gan import generate, train, translate, writers
    from vice_gan.state import MOTION_DIM

    if per_emotion < 1:
        raise RatingError(f"--per_emotion={per_emotion}: must be >= 1")
    if os.path.exists(os.path.join(out, "key.json")) or os.path.exists(os.path.join(out, "page")):
        raise RatingError(f"{out} already holds an export; choose a new --out")
    items, used, datasets = [], set(), {}
    for r, run in enumerate(runs):
        config, models, state, step = translate.load_run(run)
        data_key = (config.dataset, config.data_dir, config.split_seed)
        if data_key not in datasets:
            datasets[data_key] = train.load_data(config)
        data = datasets[data_key]
        pairs = train.eval_pairs(config, data)
        label = _model_label(config, used)
        fn = generate.make_translate_fn(config, models)
        rng = np.random.default_rng(np.random.SeedSequence([seed, r]))
        for e, emotion in enumerate(labels.EMOTIONS):
            rows = np.flatnonzero(pairs["target_label"] == e)
            held_out = len(rows) > 0
            if not held_out:  # no test subject evaluates this emotion: any input of another one
                rows = np.flatnonzero(pairs["input_label"] != e)
            pick = rng.choice(rows, per_emotion, replace=len(rows) < per_emotion)
            k0, k1 = jax.random.split(jax.random.PRNGKey(int(rng.integers(2**31))))
            h0 = jax.random.normal(k0, (per_emotion, MOTION_DIM))
            eps = jax.random.normal(k1, (per_emotion, config.video_length, MOTION_DIM))
            cats = np.full(per_emotion, e, np.int32)
            clips = np.asarray(fn(state, pairs["input"][pick], cats, h0, eps))
            for row, clip in zip(pick, clips, strict=True):
                items.append(
                    {
                        "frames": writers.to_uint8(clip),
                        "model": label,
                        "emotion": emotion,
                        "run": os.path.abspath(run),
                        "step": step,
                        "subject": data.table.subject_names[int(pairs["subject"][row])],
                        "input_emotion": labels.ALL_LABELS[int(pairs["input_label"][row])],
                        "held_out_emotion": bool(held_out),
                    }
                )
    return write_page(items, out, seed)


def read_answers(key: dict, paths: list[str]) -> list[tuple[str, str, str]]:
    """(model, true emotion, answered emotion) for every answer of every file.

    Raises:
      RatingError: a file that is not an answers file of this export, or names an unknown clip
        or emotion.
    """
    out = []
    for path in paths:
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise RatingError(f"cannot read answers file {path}: {e}") from None
        if not isinstance(record, dict) or record.get("format") != ANSWERS_FORMAT:
            raise RatingError(f"{path} is not a vice-gan answers file")
        if record.get("page_id") != key["page_id"]:
            raise RatingError(
                f"{path} answers page {record.get('page_id')!r}, but the key is of page "
                f"{key['page_id']!r}"
            )
        latest = {}  # a clip answered twice (an edited file) counts once, the last answer
        for a in record.get("answers", []):
            if a.get("clip") not in key["clips"]:
                raise RatingError(f"{path}: clip {a.get('clip')!r} is not in the key")
            if a.get("answer") not in labels.EMOTIONS:
                raise RatingError(f"{path}: answer {a.get('answer')!r} is not an emotion")
            latest[a["clip"]] = a["answer"]
        for clip, answer in latest.items():
            truth = key["clips"][clip]
            out.append((truth["model"], truth["emotion"], answer))
    return out


def score(key: dict, answers: list[tuple[str, str, str]]) -> dict:
    """Per-model, per-emotion accuracy.

    Returns:
      {model: {'<emotion>': accuracy or NaN, '<emotion>/count': n, 'cas_h': mean over emotions
      with answers, 'accuracy': over all answers, 'count': n}}, models sorted by name.
    """
    result = {}
    for model in sorted({m for m, _, _ in answers} | {c["model"] for c in key["clips"].values()}):
        mine = [(t, a) for m, t, a in answers if m == model]
        row = {"count": len(mine)}
        accs = []
        for emotion in labels.EMOTIONS:
            hits = [t == a for t, a in mine if t == emotion]
            row[f"{emotion}/count"] = len(hits)
            row[emotion] = float(np.mean(hits)) if hits else float("nan")
            if hits:
                accs.append(row[emotion])
        row["cas_h"] = float(np.mean(accs)) if accs else float("nan")
        row["accuracy"] = float(np.mean([t == a for t, a in mine])) if mine else float("nan")
        result[model] = row
    return result


def to_markdown(scores: dict) -> str:
    """A table: one row per model, per-emotion accuracy, CAS-H and number of answers."""
    head = "| model | " + " | ".join(labels.EMOTIONS) + " | CAS-H | answers |"
    lines = [head, "|" + "---|" * (len(labels.EMOTIONS) + 3)]
    for model, row in scores.items():
        cells = [f"{row[e]:.2f}" if row[e] == row[e] else "-" for e in labels.EMOTIONS]
        cas = f"{row['cas_h']:.3f}" if row["cas_h"] == row["cas_h"] else "-"
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {cas} | {row['count']} |")
    return "\n".join(lines) + "\n"


def plot(scores: dict, path: str) -> None:
    """Grouped bars: per-emotion accuracy of each model, and its CAS-H (Figures 13 and 16)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(labels.EMOTIONS) + ["CAS-H"]
    models = list(scores)
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for i, model in enumerate(models):
        values = [scores[model][e] for e in labels.EMOTIONS] + [scores[model]["cas_h"]]
        xs = np.arange(len(groups)) + (i - (len(models) - 1) / 2) * width
        ax.bar(xs, np.nan_to_num(values), width, label=model)
    ax.axhline(1 / len(labels.EMOTIONS), color="k", ls=":", lw=1, label="chance")
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylim(0, 1)
    ax.set_ylabel("human accuracy")
    ax.legend(fontsize=8, ncol=min(4, len(models) + 1))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vice_gan.evaluation.human_rating")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="write clips and a blind rating page")
    ex.add_argument("--runs", nargs="+", required=True, help="GAN run directories (--workdir)")
    ex.add_argument("--per_emotion", type=int, default=10, help="clips per emotion per run")
    ex.add_argument("--out", required=True, help="new export folder")
    ex.add_argument("--seed", type=int, default=0, help="clip choice and order")
    sc = sub.add_parser("score", help="accuracy from answer files")
    sc.add_argument("--key", required=True, help="key.json of the export")
    sc.add_argument("--answers", nargs="+", required=True, help="answers JSON files")
    sc.add_argument("--out", default=None, help="folder for cas_h.md and cas_h.png")
    args = parser.parse_args(argv)
    from vice_gan import checkpointing, translate

    try:
        if args.command == "export":
            key = export(args.runs, args.per_emotion, args.out, args.seed)
            print(
                f"wrote {len(key['clips'])} clips: share {os.path.join(args.out, 'page')}/, "
                f"keep {os.path.join(args.out, 'key.json')} hidden"
            )
            return 0
        try:
            with open(args.key) as f:
                key = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise RatingError(f"cannot read key {args.key}: {e}") from None
        if not isinstance(key, dict) or key.get("format") != KEY_FORMAT:
            raise RatingError(f"{args.key} is not a vice-gan rating key")
        scores = score(key, read_answers(key, args.answers))
        table = to_markdown(scores)
        print(table, end="")
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            with open(os.path.join(args.out, "cas_h.md"), "w") as f:
                f.write(f"CAS-H from {len(args.answers)} answer file(s)\n\n{table}")
            plot(scores, os.path.join(args.out, "cas_h.png"))
        return 0
    except (translate.TranslateError, checkpointing.CheckpointError, ValueError, OSError) as e:
        # ValueError covers RatingError and data set errors (input_pipeline.DatasetError).
        print(f"human_rating: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
