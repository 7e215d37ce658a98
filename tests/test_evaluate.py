"""`--mode=evaluate` writes metrics.json in the documented schema (evaluate.py docstring).

The run is untrained (test_translate.make_untrained_run), the in-domain networks tiny: this
checks the bookkeeping, not the values.
"""

import json
import math
import os

import pytest
from test_translate import make_untrained_run

from vice_gan import config as config_lib
from vice_gan import labels, train
from vice_gan.evaluation import evaluate, in_domain

TINY_NETS = in_domain.TrainSettings(emotion_steps=3, identity_steps=3, clip_batch=4, frame_batch=8)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    config = make_untrained_run(tmp_path_factory.mktemp("evaluate"), condition="unseen")
    data = train.load_data(config)
    result = evaluate.evaluate(config, data, in_domain_settings=TINY_NETS)
    with open(os.path.join(config.workdir, "metrics.json")) as f:
        on_disk = json.load(f)
    return config, data, result, on_disk


def test_metrics_json_schema(evaluated):
    config, _, result, on_disk = evaluated
    assert on_disk == json.loads(json.dumps(result))  # what is returned is what is written
    assert on_disk["schema_version"] == evaluate.SCHEMA_VERSION
    assert on_disk["dataset"] == "synthetic_faces/small" and on_disk["condition"] == "unseen"
    from vice_gan.datasets.synthetic_faces import builder

    assert on_disk["dataset_version"] == str(builder.SyntheticFaces.VERSION)
    assert on_disk["model"] == 4  # single frame, frozen (Table 2)
    assert on_disk["variant"]["content_encoding"] == "single"
    assert on_disk["config_fingerprint"] == config_lib.fingerprint(config, "gan")
    assert on_disk["step"] == 1 and on_disk["seed"] == config.seed
    metrics = on_disk["metrics"]
    assert set(metrics) == set(evaluate.DEFINITIONS)
    n = metrics["ssim"]["num_clips"]
    assert n > 0
    for name, entry in metrics.items():
        assert entry["name"] == name
        assert entry["definition"] == evaluate.DEFINITIONS[name]
        assert entry["num_clips"] == n
        assert math.isfinite(entry["value"]), name
        if name in evaluate.REFERENCES:
            assert entry["reference"] == evaluate.REFERENCES[name]
            assert evaluate.REFERENCES[name] in metrics


def test_in_domain_entries(evaluated):
    config, data, _, on_disk = evaluated
    metrics = on_disk["metrics"]
    for name in (
        "emotion_accuracy",
        "identity_top1",
        "emotion_accuracy_real",
        "identity_top1_real",
    ):
        assert 0.0 <= metrics[name]["value"] <= 1.0
    per_emotion = on_disk["emotion_accuracy_per_emotion"]
    assert per_emotion["real"]["count"] == metrics["ssim"]["num_clips"]
    assert set(f"{e}/accuracy" for e in labels.EMOTIONS) <= set(per_emotion["generated"])
    nets = on_disk["in_domain_nets"]
    assert nets["settings"]["emotion_steps"] == TINY_NETS.emotion_steps
    assert nets["path"] == in_domain.cache_dir(
        config.data_dir,
        config.dataset,
        config.split_seed,
        "unseen",
        config.video_length,
        config.frame_stride,
    )
    assert os.path.exists(os.path.join(nets["path"], "nets.npz"))
    # The gallery: one clip per video of every test subject (all 7 labels in synthetic_faces).
    test_videos = sum(int((data.table.subject == s).sum()) for s in data.split.test_subjects)
    assert on_disk["num_gallery_clips"] == test_videos
    assert on_disk["num_test_subjects"] == len(data.split.test_subjects)


@pytest.mark.parametrize("name", ["clip.gif", "face.png"])
@pytest.mark.parametrize("keep", [13, 200])
def test_read_clip_truncated_file_one_clear_error(tmp_path, name, keep):
    """A truncated GIF or PNG (PIL raises SyntaxError or OSError) -> ValueError naming it."""
    import imageio.v2 as imageio
    import numpy as np

    rng = np.random.default_rng(0)
    whole = tmp_path / f"whole_{name}"
    frames = rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    if name.endswith(".gif"):
        imageio.mimsave(whole, list(frames), duration=100)
    else:
        imageio.imwrite(whole, frames[0])
    cut = tmp_path / name
    cut.write_bytes(whole.read_bytes()[:keep])
    with pytest.raises(ValueError, match=f"cannot read {cut} as a clip"):
        evaluate.read_clip(str(cut), 2, 1)
