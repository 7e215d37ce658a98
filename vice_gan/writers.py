"""Run outputs: scalar logs (JSONL + TensorBoard, no TensorFlow) and pictures (GIF, MP4, PNG).

Only process 0 writes (the caller passes `enabled=jax.process_index() == 0`). Picture files are
written to a temporary name and renamed, so a killed run never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import time

import imageio.v2 as imageio
import numpy as np


class MetricWriter:
    """Scalars to `<logdir>/metrics.jsonl` (one object per step) and TensorBoard event files."""

    def __init__(self, logdir: str, enabled: bool = True):
        self.enabled = enabled
        self._tb = None
        self._jsonl = None
        if not enabled:
            return
        os.makedirs(logdir, exist_ok=True)
        from tensorboardX import SummaryWriter  # local import: only the writing process needs it

        self._tb = SummaryWriter(logdir, flush_secs=30)
        path = os.path.join(logdir, "metrics.jsonl")
        torn = os.path.exists(path) and os.path.getsize(path) > 0 and not _ends_with_newline(path)
        self._jsonl = open(path, "a")
        if torn:  # a kill mid-line: start a new line (rewind drops the torn one)
            self._jsonl.write("\n")

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **clean}) + "\n")
        self._jsonl.flush()
        for k, v in clean.items():
            self._tb.add_scalar(k, v, int(step))

    def rewind(self, step: int) -> None:
        """Makes metrics.jsonl consistent with a run resumed from checkpoint `step`.

        Drops the lines of steps after `step` (logged by a killed run after its last
        checkpoint; the resumed run logs them again), keeps one line per step (the last: the
        step-0 parameter counts are written at every start) and drops a torn last line. The
        file is rewritten atomically (temp file, then rename). TensorBoard event files are
        left alone: they are append-only and TensorBoard shows the newest value per step.
        """
        if not self.enabled:
            return
        self._jsonl.close()
        path = self._jsonl.name
        by_step: dict[int, str] = {}
        with open(path) as f:
            for line in f:
                try:
                    logged = int(json.loads(line)["step"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line torn by a kill
                if logged <= step:
                    by_step[logged] = line if line.endswith("\n") else line + "\n"
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(by_step[k] for k in sorted(by_step))
        os.replace(tmp, path)
        self._jsonl = open(path, "a")

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def write_json(path: str, obj: object) -> None:
    """Writes JSON atomically (temp file, then rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Pixels in [-1, 1] (any float array) -> uint8 [0, 255]."""
    return np.clip(np.round((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def video_grid(clips: np.ndarray, pad: int = 2) -> np.ndarray:
    """Tiles clips [R, C, T, H, W, 3] (float in [-1, 1] or uint8) into frames [T, H', W', 3].

    Rows are identities and columns emotions in the sample grids; `pad` white pixels between.
    """
    clips = clips if clips.dtype == np.uint8 else to_uint8(clips)
    r, c, t, h, w, ch = clips.shape
    out = np.full((t, r * (h + pad) + pad, c * (w + pad) + pad, ch), 255, np.uint8)
    for i in range(r):
        for j in range(c):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[:, y : y + h, x : x + w] = clips[i, j]
    return out


def _atomic(path: str, write) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{ext}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_gif(path: str, frames: np.ndarray, fps: float = 8.0) -> None:
    """Animated GIF of uint8 frames [T, H, W, 3], looping."""
    _atomic(path, lambda p: imageio.mimsave(p, list(frames), duration=1000.0 / fps, loop=0))


def write_mp4(path: str, frames: np.ndarray, fps: float = 8.0) -> None:
    """MP4 (H.264 via imageio-ffmpeg) of uint8 frames [T, H, W, 3]; sizes padded to even."""
    t, h, w, c = frames.shape
    padded = np.zeros((t, h + h % 2, w + w % 2, c), np.uint8)
    padded[:, :h, :w] = frames
    _atomic(path, lambda p: imageio.mimsave(p, list(padded), fps=fps, macro_block_size=1))


def write_png(path: str, image: np.ndarray) -> None:
    """PNG of a uint8 image [H, W, 3]."""
    _atomic(path, lambda p: imageio.imwrite(p, image))


def frame_strip(frames: np.ndarray, every: int = 1) -> np.ndarray:
    """Frames [T, H, W, 3] side by side (every n-th) as one image, for contact sheets."""
    return np.concatenate(list(frames[::every]), axis=1)
