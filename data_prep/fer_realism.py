"""How the thesis's FER-2013 classifier labels the apex frames of `synthetic_faces`.

    python data_prep/fer_realism.py --config=default --out=/tmp/fer_realism

takes the apex frame of every emotion take (`facs.apex_frame` on the take's `au`: the strongest
expression not mid-blink) and the middle open-eyed frame of every neutral take, classifies them
with the FER-2013 mini-Xception of CAS-M (vice_gan.evaluation.fer) and prints the confusion
matrix (rows: the take's label, columns: the classifier's 7 classes), the accuracy per emotion
and over the six emotions. The same report goes to --out as `fer_realism.md` (a table ready to
paste into the README) and `fer_realism.json`.

Without --data_dir the takes are rendered here with `builder.make_take`, the function the TFDS
builder writes (bit-identical frames, checked by tests/test_synthetic_faces.py), which lets
--subjects score the first few subjects quickly while tuning the renderer. With --data_dir the
config is built there if needed and read back through `registry.load_videos`, exactly as
training sees it.
"""

import concurrent.futures
import json
import multiprocessing
import os
import pathlib
import sys
import time

import numpy as np
from absl import app, flags

from vice_gan import labels
from vice_gan.datasets.synthetic_faces import builder as builder_lib
from vice_gan.datasets.synthetic_faces import facs


def _define_flags() -> None:
    """CLI flags, defined only when run as a script: importing this module (the tests do) must
    not add flags such as --data_dir to a process that already has vice_gan.config's."""
    global _CONFIG, _DATA_DIR, _SUBJECTS, _OUT, _WORKERS
    _CONFIG = flags.DEFINE_enum("config", "default", ["default", "small"], "Builder config.")
    _DATA_DIR = flags.DEFINE_string(
        "data_dir", None, "TFDS data_dir to build/load the config in; unset: render in memory."
    )
    _SUBJECTS = flags.DEFINE_integer(
        "subjects", None, "Score only the first N subjects (rendering in memory); all if unset."
    )
    _OUT = flags.DEFINE_string("out", None, "Folder for fer_realism.md and fer_realism.json.")
    _WORKERS = flags.DEFINE_integer(
        "workers", os.cpu_count() or 1, "Render processes when rendering in memory (0: this one)."
    )


NUM_LABELS = len(labels.ALL_LABELS)


def key_frame(au: np.ndarray) -> int:
    """The frame scored for a take: its apex, or a neutral take's middle open-eyed frame."""
    return facs.apex_frame(np.asarray(au, np.float32))


def _render_job(args: tuple) -> tuple[int, np.ndarray]:
    """(label, key frame) of one take rendered by the builder's own function."""
    config, subject, emotion, take = args
    _, ex = builder_lib.make_take(config, subject, emotion, take)
    return emotion, ex["frames"][key_frame(ex["au"])]


def render_key_frames(
    config: builder_lib.SyntheticFacesConfig, num_subjects: int | None, workers: int
) -> tuple[np.ndarray, np.ndarray]:
    """Key frames of the first `num_subjects` subjects' takes, rendered in memory.

    Must run before JAX is imported when `workers` > 0 (worker processes are forked).

    Returns:
      (frames uint8 [N, 64, 64, 3], labels int [N]) in the builder's take order.
    """
    jobs = [
        (config, *job)
        for job in builder_lib.take_list(config)
        if num_subjects is None or job[0] < num_subjects
    ]
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            out = list(pool.map(_render_job, jobs, chunksize=4))
    else:
        out = [_render_job(job) for job in jobs]
    return np.stack([f for _, f in out]), np.array([e for e, _ in out])


def load_key_frames(config_name: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """Key frames of every take of the prepared config (built first if needed)."""
    from vice_gan.datasets import registry  # imports TFDS; only needed on this path

    table = registry.load_videos(f"synthetic_faces/{config_name}", data_dir)
    frames = np.stack(
        [video[key_frame(au)] for video, au in zip(table.frames, table.au, strict=True)]
    )
    return frames, np.asarray(table.emotion)


def confusion(probs: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Confusion counts of the classifier's top class against the takes' labels.

    Args:
      probs: [N, 7] classifier probabilities in `fer.FER_CLASS_NAMES` order.
      true: int [N] label indices (vice_gan.labels.ALL_LABELS).

    Returns:
      int64 [7, 7]: row = true label, column = predicted label, both in ALL_LABELS order.
    """
    from vice_gan.evaluation import fer

    pred = np.asarray(fer.FER_TO_EMOTION)[np.argmax(np.asarray(probs), axis=-1)]
    counts = np.zeros((NUM_LABELS, NUM_LABELS), np.int64)
    np.add.at(counts, (np.asarray(true), pred), 1)
    return counts


def summarise(counts: np.ndarray) -> dict:
    """Row percentages, per-label accuracy and the accuracy over the six emotions."""
    rows = counts.sum(axis=1)
    pct = 100.0 * counts / np.maximum(rows, 1)[:, None]
    six = slice(0, labels.NUM_EMOTIONS)
    return {
        "labels": list(labels.ALL_LABELS),
        "counts": counts.tolist(),
        "row_percent": np.round(pct, 1).tolist(),
        "accuracy": {n: round(float(pct[i, i]), 1) for i, n in enumerate(labels.ALL_LABELS)},
        "emotion_accuracy": round(
            100.0 * float(np.trace(counts[six, six])) / max(int(rows[six].sum()), 1), 1
        ),
        "num_frames": {n: int(rows[i]) for i, n in enumerate(labels.ALL_LABELS)},
    }


def markdown(summary: dict, title: str) -> str:
    """The confusion as a Markdown table (row percentages) with the accuracies beneath."""
    names = summary["labels"]
    head = ["true \\ FER"] + names + ["n"]
    lines = [
        f"**{title}**",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    for i, name in enumerate(names):
        cells = [
            f"**{v:.0f}**" if j == i else f"{v:.0f}"
            for j, v in enumerate(summary["row_percent"][i])
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {summary['num_frames'][name]} |")
    acc = ", ".join(f"{n} {summary['accuracy'][n]:.0f}%" for n in names[: labels.NUM_EMOTIONS])
    lines += [
        "",
        f"Accuracy over the six emotions: **{summary['emotion_accuracy']:.1f}%** ({acc}); "
        f"neutral takes labelled neutral: {summary['accuracy'][labels.NEUTRAL]:.0f}%. "
        "Cells are % of the row; n is the number of frames.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = next(c for c in builder_lib.SyntheticFaces.BUILDER_CONFIGS if c.name == _CONFIG.value)
    start = time.perf_counter()
    if _DATA_DIR.value:
        if _SUBJECTS.value is not None:
            raise app.UsageError("--subjects renders in memory; leave --data_dir unset")
        frames, true = load_key_frames(config.name, _DATA_DIR.value)
    else:
        frames, true = render_key_frames(config, _SUBJECTS.value, _WORKERS.value)
    got = time.perf_counter() - start
    from vice_gan.evaluation import fer  # JAX: only after any forked rendering

    probs = np.asarray(fer.load_fer_classifier().probs(frames))
    summary = summarise(confusion(probs, true))
    subjects = min(_SUBJECTS.value or config.num_subjects, config.num_subjects)
    title = (
        f"FER-2013 mini-Xception on synthetic_faces/{config.name} ({subjects} subjects; "
        "apex frames, middle frame of neutral takes)"
    )
    summary.update(
        config=config.name,
        subjects=subjects,
        command=" ".join(["python", "data_prep/fer_realism.py", *sys.argv[1:]]),
    )
    text = markdown(summary, title)
    print(text)
    took = time.perf_counter() - start - got
    print(f"{len(frames)} frames in {got:.1f} s, classified in {took:.1f} s")
    if _OUT.value:
        out = pathlib.Path(_OUT.value)
        out.mkdir(parents=True, exist_ok=True)
        (out / "fer_realism.md").write_text(text)
        (out / "fer_realism.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(f"wrote {out / 'fer_realism.md'} and {out / 'fer_realism.json'}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
