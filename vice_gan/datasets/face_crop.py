"""Preprocessing shared by the `mug` and `video_folder` builders: decode, face box, crop.

Every take goes through the same steps (thesis §5.1.1: all frames, resized to 64x64):

1. Decode the frames (JPEG/PNG files, a video file, or a MoCoGAN tiled image) to RGB uint8.
2. Choose ONE square face box for the whole take, so the crop does not jitter from frame to
   frame. With `crop='haar'` the box is the median of OpenCV's frontal-face Haar detections on
   a few frames spread over the take, enlarged by `FACE_BOX_SCALE` to take in chin and brow.
   With `crop='center'` (or when no face is found) it is the largest centred square, which on
   MUG's centred, head-and-shoulders frames keeps the face but with more background.
   `crop='auto'` uses Haar when the optional `opencv-python-headless` package (extra `mug`)
   is installed and the centred square otherwise; the build report records which was used.
3. Crop that box from every frame and resize it to 64x64 (Lanczos).

The Haar cascade file ships inside the opencv wheel (`cv2.data.haarcascades`), so no model is
downloaded at run time. This module also holds the errors both builders raise.
"""

import functools
import math
import pathlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image

from vice_gan.datasets import schema

CROP_METHODS: tuple[str, ...] = ("auto", "haar", "center")
# A Haar frontal-face box spans roughly brow to lower lip; 1.4x its side adds the chin (open
# mouths in surprise/fear) and the forehead. The box is then clamped to the frame.
FACE_BOX_SCALE = 1.4
# Frames of a take on which the face is detected; the median box ignores a few misses.
DETECT_SAMPLES = 5
# Short side the detection image is reduced to: a face filling a third of a head-and-shoulders
# frame (as in MUG) stays ~85 px, well above the cascade's 24 px window, and detection is
# fast (~10 ms per sample frame).
DETECT_SHORT_SIDE = 256
# The crop is decoded at >= 2x the output size (JPEG DCT scaling), then Lanczos-resized.
OVERSAMPLE = 2
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DatasetLayoutError(ValueError):
    """The input folder is missing, empty, or not laid out as the builder expects."""


class CorruptFrameError(ValueError):
    """A frame, video or tiled image could not be decoded; `path` names the file."""

    def __init__(self, path: pathlib.Path | str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read {self.path}: {reason}")


class Box(NamedTuple):
    """A square crop box in full-resolution pixel coordinates."""

    top: int
    left: int
    side: int


@functools.cache
def haar_available() -> bool:
    """Whether OpenCV (and so its bundled Haar face cascade) can be imported."""
    try:
        import cv2  # optional extra 'mug'
    except ImportError:
        return False
    return hasattr(cv2, "CascadeClassifier")


def resolve_crop(crop: str) -> str:
    """Maps a crop option to the method actually used: 'haar' or 'center'.

    Raises:
      ValueError: unknown option, or 'haar' asked for without OpenCV installed.
    """
    if crop not in CROP_METHODS:
        raise ValueError(f"unknown crop {crop!r}; expected one of {', '.join(CROP_METHODS)}")
    if crop == "auto":
        return "haar" if haar_available() else "center"
    if crop == "haar" and not haar_available():
        raise ValueError(
            "crop='haar' needs OpenCV: pip install 'vice-gan[mug]' (opencv-python-headless), "
            "or use crop='center'"
        )
    return crop


def to_rgb(array: np.ndarray) -> np.ndarray:
    """Returns `array` as uint8 [H, W, 3]: grey is replicated, alpha dropped."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected [H, W] or [H, W, 1|3|4] pixels, got shape {array.shape}")
    if array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


def decode_image(
    path: pathlib.Path | str, min_short_side: int | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decodes an image file to RGB uint8, optionally at reduced resolution.

    Args:
      path: image file.
      min_short_side: if given, JPEGs are decoded with DCT scaling (Pillow `draft`) to the
        smallest 1/1, 1/2, 1/4 or 1/8 size whose short side is still >= this; several times
        faster on MUG's large frames. Other formats decode at full size.

    Returns:
      (pixels uint8 [h, w, 3], (H, W) full-resolution size read from the file header).

    Raises:
      CorruptFrameError: the file is unreadable, not an image, or truncated.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            if min_short_side is not None:
                factor = min_short_side / min(width, height)
                img.draft(None, (math.ceil(width * factor), math.ceil(height * factor)))
            pixels = np.asarray(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise CorruptFrameError(path, f"{type(err).__name__}: {err}") from err
    return pixels, (height, width)


def center_square_box(height: int, width: int) -> Box:
    """The largest square centred in a `height` x `width` frame."""
    side = min(height, width)
    return Box(top=(height - side) // 2, left=(width - side) // 2, side=side)


def square_box_around(
    center_y: float, center_x: float, side: float, height: int, width: int
) -> Box:
    """A square of `side` centred at (y, x), shrunk to fit the frame and shifted inside it."""
    side = int(round(min(side, height, width)))
    top = int(round(center_y - side / 2))
    left = int(round(center_x - side / 2))
    top = min(max(top, 0), height - side)
    left = min(max(left, 0), width - side)
    return Box(top=top, left=left, side=side)


def box_from_detections(
    detections: Sequence[tuple[float, float, float, float]],
    height: int,
    width: int,
    scale: float = FACE_BOX_SCALE,
) -> Box | None:
    """One take's face box from per-frame face detections.

    Args:
      detections: (y, x, h, w) face rectangles in full-resolution coordinates, at most one
        per sampled frame.
      height: frame height.
      width: frame width.
      scale: enlargement of the median detection's side.

    Returns:
      The enlarged square around the median centre and size, or None if nothing was detected.
    """
    if not detections:
        return None
    dets = np.asarray(detections, dtype=np.float64)
    center_y = np.median(dets[:, 0] + dets[:, 2] / 2)
    center_x = np.median(dets[:, 1] + dets[:, 3] / 2)
    side = np.median(np.maximum(dets[:, 2], dets[:, 3])) * scale
    return square_box_around(center_y, center_x, side, height, width)


@functools.cache
def _haar_cascade():
    import cv2  # optional extra 'mug'; only imported when crop resolves to 'haar'

    path = pathlib.Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"OpenCV could not load its Haar cascade {path}")
    return cascade


def detect_face_haar(rgb: np.ndarray) -> tuple[float, float, float, float] | None:
    """The largest frontal face in an RGB uint8 [H, W, 3] image, as (y, x, h, w), or None."""
    import cv2  # optional extra 'mug'

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    factor = min(1.0, DETECT_SHORT_SIDE / min(gray.shape))
    if factor < 1.0:
        size = (round(gray.shape[1] * factor), round(gray.shape[0] * factor))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)
    min_side = max(24, min(gray.shape) // 8)
    faces = _haar_cascade().detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side)
    )
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
    ry, rx = rgb.shape[0] / gray.shape[0], rgb.shape[1] / gray.shape[1]
    return (y * ry, x * rx, h * ry, w * rx)


def sample_indices(num_frames: int, count: int = DETECT_SAMPLES) -> list[int]:
    """Up to `count` frame indices spread evenly over a take, first and last included."""
    return sorted({int(round(i)) for i in np.linspace(0, num_frames - 1, min(count, num_frames))})


def choose_box(
    samples: Sequence[np.ndarray],
    full_hw: tuple[int, int],
    method: str,
    detector: Callable[[np.ndarray], tuple | None] = detect_face_haar,
) -> tuple[Box, str]:
    """The take's face box from a few (possibly reduced) sample frames.

    Args:
      samples: RGB uint8 [h, w, 3] frames, each a scaled copy of a full (H, W) frame.
      full_hw: (H, W) of the take's frames.
      method: 'haar' or 'center' (see `resolve_crop`).
      detector: face detector on one RGB frame, returning (y, x, h, w) in its pixels.

    Returns:
      (box in full-resolution coordinates, how it was found: 'haar', 'center' or
      'center_fallback' when Haar found no face on any sample).
    """
    height, width = full_hw
    if method == "center":
        return center_square_box(height, width), "center"
    detections = []
    for frame in samples:
        found = detector(frame)
        if found is not None:
            ry, rx = height / frame.shape[0], width / frame.shape[1]
            detections.append((found[0] * ry, found[1] * rx, found[2] * ry, found[3] * rx))
    box = box_from_detections(detections, height, width)
    if box is None:
        return center_square_box(height, width), "center_fallback"
    return box, "haar"


def crop_resize(
    frame: np.ndarray, box: Box, size: int = schema.IMAGE_SIZE, full_hw: tuple | None = None
) -> np.ndarray:
    """Crops `box` from a frame and resizes it to uint8 [size, size, 3] (Lanczos).

    Args:
      frame: RGB uint8 [h, w, 3]; may be a reduced decode of a full (H, W) frame.
      box: square box in full-resolution coordinates.
      size: output side.
      full_hw: (H, W) the box refers to; defaults to the frame's own size.
    """
    height, width = full_hw or frame.shape[:2]
    fy, fx = frame.shape[0] / height, frame.shape[1] / width
    region = (
        box.left * fx,
        box.top * fy,
        (box.left + box.side) * fx,
        (box.top + box.side) * fy,
    )
    image = Image.fromarray(frame).resize((size, size), Image.Resampling.LANCZOS, box=region)
    return np.asarray(image, dtype=np.uint8)


def process_frame_files(
    paths: Sequence[pathlib.Path], method: str, size: int = schema.IMAGE_SIZE
) -> tuple[np.ndarray, dict]:
    """Decodes, face-crops and resizes a take stored as one image file per frame.

    Frames are decoded one at a time at reduced resolution, so a take of large frames never
    sits in memory at full size.

    Args:
      paths: the frame files in temporal order.
      method: 'haar' or 'center'.
      size: output side.

    Returns:
      (frames uint8 [T, size, size, 3], info dict with 'box', 'box_method', 'frame_size').

    Raises:
      CorruptFrameError: a frame is unreadable or its size differs from the first frame's.
    """
    first, full_hw = decode_image(paths[0], DETECT_SHORT_SIDE)
    samples = [first]
    if method == "haar":  # the centred box needs only the frame size
        for i in sample_indices(len(paths))[1:]:
            samples.append(_decode_same_size(paths[i], full_hw, DETECT_SHORT_SIDE))
    box, box_method = choose_box(samples, full_hw, method)
    # Decode at the smallest JPEG scale that keeps the crop >= OVERSAMPLE x the output size.
    min_short = math.ceil(OVERSAMPLE * size * min(full_hw) / box.side)
    out = np.empty((len(paths), size, size, 3), np.uint8)
    for i, path in enumerate(paths):
        out[i] = crop_resize(_decode_same_size(path, full_hw, min_short), box, size, full_hw)
    return out, _info(box, box_method, full_hw)


def process_frame_array(
    frames: np.ndarray, method: str, size: int = schema.IMAGE_SIZE
) -> tuple[np.ndarray, dict]:
    """Face-crops and resizes a decoded take, uint8 [T, H, W, 3] -> ([T, size, size, 3], info)."""
    full_hw = frames.shape[1:3]
    samples = [frames[i] for i in sample_indices(len(frames))]
    box, box_method = choose_box(samples, full_hw, method)
    out = np.stack([crop_resize(frame, box, size) for frame in frames])
    return out, _info(box, box_method, full_hw)


def _decode_same_size(path: pathlib.Path, full_hw: tuple[int, int], min_short: int) -> np.ndarray:
    pixels, hw = decode_image(path, min_short)
    if hw != full_hw:
        raise CorruptFrameError(
            path, f"frame size {hw[1]}x{hw[0]} differs from the take's {full_hw[1]}x{full_hw[0]}"
        )
    return pixels


def _info(box: Box, box_method: str, full_hw: tuple[int, int]) -> dict:
    return {
        "box": list(box),
        "box_method": box_method,
        "frame_size": f"{full_hw[1]}x{full_hw[0]}",
    }
