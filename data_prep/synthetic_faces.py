"""Builds the embedded `synthetic_faces` data set and writes pictures to check it by eye.

  python data_prep/synthetic_faces.py --config=default --data_dir=/data/tfds

prints TFDS's progress, the build time and the size on disk, and writes into --out_dir
(default: <data_dir>/synthetic_faces/<config>/previews, beside the version folder):
  contact_sheet.png  subjects x (six emotions at their apex + the neutral take)
  emotions.gif       one subject's six emotion takes playing side by side

Both pictures are made from the prepared data read back through `tfds.data_source`, so they
show exactly what training will see. The default config (50 subjects, 650 takes) builds in well
under a minute on 2 cores; 'small' (10 subjects, 70 takes) in a few seconds.
"""

import os
import pathlib
import shutil
import time

import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw

from vice_gan import labels
from vice_gan.datasets.synthetic_faces import builder as builder_lib
from vice_gan.datasets.synthetic_faces import facs

_CONFIG = flags.DEFINE_enum("config", "default", ["default", "small"], "Builder config to build.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data_dir for the prepared data (TFDS default if unset)."
)
_OUT_DIR = flags.DEFINE_string(
    "out_dir", None, "Where to write the pictures (default: previews/ beside the data)."
)
_WORKERS = flags.DEFINE_integer(
    "workers", os.cpu_count() or 1, "Render processes (0: render in this process)."
)
_SHEET_SUBJECTS = flags.DEFINE_integer("sheet_subjects", 12, "Subjects on the contact sheet.")
_GIF_SUBJECT = flags.DEFINE_integer("gif_subject", 0, "Subject shown in the GIF.")
_SCALE = flags.DEFINE_integer("scale", 2, "Pixel magnification of the pictures.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete and rebuild an existing data set.")

# MUG was recorded at 19 frames per second.
GIF_FRAME_MS = 53


def _disk_size(path: pathlib.Path) -> int:
    """Total bytes of the files under `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _read_takes(source, subjects: set[int]) -> dict[tuple[int, int, int], dict]:
    """The examples of `subjects`, keyed by (subject, emotion, take)."""
    found = {}
    for i in range(len(source)):
        ex = source[i]
        if int(ex["subject"]) in subjects:
            found[int(ex["subject"]), int(ex["emotion"]), int(ex["take"])] = ex
    return found


def _label(img: Image.Image, text: str) -> Image.Image:
    """`img` with a white caption strip on top."""
    out = Image.new("RGB", (img.width, img.height + 14), "white")
    out.paste(img, (0, 14))
    ImageDraw.Draw(out).text((3, 1), text, fill="black")
    return out


def contact_sheet(takes: dict, subjects: list[int], scale: int) -> Image.Image:
    """Grid of apex frames: one row per subject, columns the six emotions then neutral.

    Args:
      takes: (subject, emotion, take) -> example with frames uint8 [T, 64, 64, 3], au [T, A].
      subjects: the rows.
      scale: pixel magnification.
    """
    tile = 64 * scale
    sheet = Image.new("RGB", (tile * len(labels.ALL_LABELS) + 40, tile * len(subjects) + 16))
    sheet.paste("white", (0, 0, sheet.width, sheet.height))
    draw = ImageDraw.Draw(sheet)
    for col, name in enumerate(labels.ALL_LABELS):
        draw.text((40 + col * tile + 4, 2), name, fill="black")
    for row, subject in enumerate(subjects):
        draw.text((2, 16 + row * tile + tile // 2 - 5), f"s{subject:03d}", fill="black")
        for col in range(len(labels.ALL_LABELS)):
            ex = takes[subject, col, 0]
            frame = ex["frames"][facs.apex_frame(np.asarray(ex["au"]))]
            img = Image.fromarray(frame).resize((tile, tile), Image.NEAREST)
            sheet.paste(img, (40 + col * tile, 16 + row * tile))
    return sheet


def emotion_gif(takes: dict, subject: int, scale: int, path: pathlib.Path) -> None:
    """Writes an animated GIF of `subject`'s first take of each emotion, side by side."""
    clips = [np.asarray(takes[subject, e, 0]["frames"]) for e in range(labels.NUM_EMOTIONS)]
    length = max(len(c) for c in clips)
    # Shorter takes hold their last (neutral) frame until the longest one ends.
    clips = [np.concatenate([c, np.repeat(c[-1:], length - len(c), 0)]) for c in clips]
    strip = np.concatenate(clips, axis=2)  # [T, 64, 6 * 64, 3]
    header = Image.new("RGB", (strip.shape[2] * scale, 14), "white")
    draw = ImageDraw.Draw(header)
    for e, name in enumerate(labels.EMOTIONS):
        draw.text((e * 64 * scale + 3, 1), name, fill="black")
    frames = []
    for frame in strip:
        img = Image.fromarray(frame).resize((frame.shape[1] * scale, 64 * scale), Image.NEAREST)
        canvas = Image.new("RGB", (img.width, img.height + 14), "white")
        canvas.paste(header, (0, 0))
        canvas.paste(img, (0, 14))
        frames.append(canvas)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    builder = builder_lib.SyntheticFaces(
        config=_CONFIG.value,
        data_dir=_DATA_DIR.value,
        file_format="array_record",
        num_workers=_WORKERS.value,
    )
    data_path = pathlib.Path(os.fspath(builder.data_path))
    if _OVERWRITE.value and data_path.exists():
        shutil.rmtree(data_path)
    start = time.perf_counter()
    if builder.is_prepared():
        print(f"{data_path} already holds the data set (pass --overwrite to rebuild).")
    else:
        builder.download_and_prepare()
        print(f"built synthetic_faces/{_CONFIG.value} in {time.perf_counter() - start:.1f} s")
    source = builder.as_data_source()["train"]
    size = _disk_size(data_path)
    print(f"{len(source)} videos, {size / 2**20:.1f} MiB on disk in {data_path}")

    out_dir = pathlib.Path(_OUT_DIR.value) if _OUT_DIR.value else data_path.parent / "previews"
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = builder.builder_config
    rows = list(range(min(_SHEET_SUBJECTS.value, cfg.num_subjects)))
    gif_subject = min(_GIF_SUBJECT.value, cfg.num_subjects - 1)
    takes = _read_takes(source, set(rows) | {gif_subject})
    contact_sheet(takes, rows, _SCALE.value).save(out_dir / "contact_sheet.png")
    emotion_gif(takes, gif_subject, _SCALE.value, out_dir / "emotions.gif")
    print(f"wrote {out_dir / 'contact_sheet.png'} and {out_dir / 'emotions.gif'}")


if __name__ == "__main__":
    app.run(main)
