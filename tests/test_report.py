"""experiments/report.py on a fake run directory: tables, charts, strips and the Table-5 logic."""

import importlib.util
import json
import os

import numpy as np
import pytest

from vice_gan.evaluation import evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name: str):
    spec = importlib.util.spec_from_file_location(
        f"experiments_{name}", os.path.join(REPO, "experiments", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = _load("report")

MODELS = {v: k for k, v in evaluate.THESIS_MODELS.items()}  # number -> (encoding, weights)


def _fake_metrics(model: int, condition: str, seed: int, values: dict) -> dict:
    encoding, weights = MODELS[model]
    return {
        "schema_version": evaluate.SCHEMA_VERSION,
        "dataset": "fake",
        "condition": condition,
        "model": model,
        "variant": {"content_encoding": encoding, "ae_weights": weights},
        "step": 10,
        "seed": seed,
        "split_seed": 0,
        "metrics": {
            k: {"name": k, "value": v, "definition": evaluate.DEFINITIONS[k], "num_clips": 8}
            for k, v in values.items()
        },
    }


def _hand_made(model: int, condition: str, seed: int) -> dict:
    """Fine-tuning lowers SSIM by 0.2 and the condition moves identity top-1 by 0.5; all else
    is seed noise of about 0.01."""
    _, weights = MODELS[model]
    noise = np.random.default_rng([model, seed, 0 if condition == "seen" else 1]).normal(
        0, 0.01, 16
    )
    values = {name: 0.5 + noise[i] for i, name in enumerate(evaluate.DEFINITIONS)}
    values["ssim"] -= 0.2 * (weights == "finetune")
    values["identity_top1"] += 0.5 * (condition == "seen")
    return values


@pytest.fixture(scope="module")
def fake_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    for model in MODELS:
        for condition in ("seen", "unseen"):
            for seed in (0, 1):
                run = root / "runs" / f"m{model}_{condition}_seed{seed}"
                run.mkdir(parents=True)
                metrics = _fake_metrics(model, condition, seed, _hand_made(model, condition, seed))
                (run / "metrics.json").write_text(json.dumps(metrics))
                if seed == 0:  # a generate output, as --mode=generate writes it
                    (run / "generate").mkdir()
                    rng = np.random.default_rng(model)
                    np.savez(
                        run / "generate" / "test_subjects_step10.npz",
                        inputs=rng.integers(0, 255, (2, 4, 64, 64, 3), dtype=np.uint8),
                        generated=rng.integers(0, 255, (2, 6, 4, 64, 64, 3), dtype=np.uint8),
                    )
    return root


def test_report_writes_tables_charts_and_strips(fake_runs, tmp_path):
    path = report.write_report(str(fake_runs / "runs"), str(tmp_path / "out"))
    with open(path) as f:
        text = f.read()
    assert "| Model 1 (all frames, fine-tuned) |" in text
    assert "real test clips (reference)" in text
    assert "## Table 5 from the numbers" in text
    for figure, *_ in report.FIGURES:
        assert os.path.getsize(tmp_path / "out" / f"fig_{figure}.png") > 1000
    for model in MODELS:
        for condition in ("seen", "unseen"):
            assert (tmp_path / "out" / f"samples_m{model}_{condition}.png").exists()
            assert (tmp_path / "out" / "metrics" / f"m{model}_{condition}_seed1.json").exists()
    assert (tmp_path / "out" / "samples_happiness_seen.png").exists()
    # Rebuilt from the copies alone: same tables, strips kept.
    with open(report.write_report(str(tmp_path / "out" / "metrics"), str(tmp_path / "out"))) as f:
        assert f.read().count("](samples_m1_seen.png)") == 1


def test_table5_marks_the_variable_that_matters(fake_runs):
    runs = report.load_runs(str(fake_runs / "runs"))
    assert len(runs) == 16
    rows = report.effects(runs)
    by = {(r["variable"], r["figure"]): r for r in rows}
    ssim = by[("Autoencoder Fine-Tuning", "ssim")]
    assert ssim["effect"] == pytest.approx(-0.2, abs=0.02) and ssim["exceeds"]
    assert by[("Training Data Composition", "identity_top1")]["exceeds"]
    # Pure noise: the content encoding moves nothing beyond the run-to-run threshold.
    assert not any(r["exceeds"] for r in rows if r["variable"] == "Content Encoding Method")
    assert ssim["df"] == 8  # 8 cells x (2 seeds - 1)
    table = report.table5(rows)
    assert table["Autoencoder Fine-Tuning"] == (True, False, False)
    assert table["Training Data Composition"] == (False, True, False)
    assert table["Content Encoding Method"] == (False, False, False)


def test_pooled_sd_by_hand():
    sd, df = report.pooled_sd([np.array([1.0, 3.0]), np.array([2.0, 2.0, 5.0])])
    # squares: (1-2)^2 + (3-2)^2 = 2; (2-3)^2 * 2 + (5-3)^2 = 6; df = 1 + 2
    assert df == 3 and sd == pytest.approx(np.sqrt(8 / 3))
    assert report.pooled_sd([np.array([1.0])]) == (pytest.approx(np.nan, nan_ok=True), 0)


def test_one_seed_gives_no_marks(fake_runs, tmp_path):
    runs = [r for r in report.load_runs(str(fake_runs / "runs")) if r["seed"] == 0]
    rows = report.effects(runs)
    assert rows and not any(r["exceeds"] for r in rows)


ablation = _load("ablation")


def _args(tmp_path, *extra):
    return ablation.make_parser().parse_args(["--out", str(tmp_path / "abl"), *extra])


def test_ablation_table_is_thesis_table2(tmp_path):
    rows = {(v["content_encoding"], v["ae_weights"]): v["model"] for v in ablation.VARIANTS}
    assert rows == evaluate.THESIS_MODELS
    runs = ablation.plan(_args(tmp_path))
    assert len(runs) == 16  # 4 models x 2 conditions x 2 seeds
    assert len({c.workdir for _, _, c in runs}) == 16
    assert {c.ae_dir for s, _, c in runs if s == 1} == {str(tmp_path / "abl" / "ae_seed1")}
    assert [os.path.basename(c.workdir) for _, _, c in runs[:2]] == [
        "m1_seen_seed0",
        "m1_unseen_seed0",
    ]
    only = ablation.plan(_args(tmp_path, "--only", "m4_*", "--seeds", "3"))
    assert [os.path.basename(c.workdir) for _, _, c in only] == ["m4_seen_seed3", "m4_unseen_seed3"]
    paper = ablation.plan(_args(tmp_path, "--scale", "paper"))[0][2]
    assert (paper.ngf, paper.video_batch, paper.num_steps, paper.ae_size) == (
        64,
        32,
        100000,
        "large",
    )


def test_ablation_skips_only_matching_finished_runs(tmp_path):
    from vice_gan import config as config_lib

    _, _, config = ablation.plan(_args(tmp_path, "--only", "m2_seen_seed0"))[0]
    assert ablation.run_state(config) == "todo"
    os.makedirs(config.workdir)
    metrics = {
        "schema_version": evaluate.SCHEMA_VERSION,
        "config_fingerprint": config_lib.fingerprint(config, "gan"),
        "step": config.num_steps,
    }
    path = os.path.join(config.workdir, "metrics.json")
    with open(path, "w") as f:
        json.dump(metrics, f)
    assert ablation.run_state(config) == "generate"  # evaluated, samples missing
    os.makedirs(os.path.join(config.workdir, "generate"))
    np.savez(os.path.join(config.workdir, "generate", "x.npz"), a=np.zeros(1))
    assert ablation.run_state(config) == "done"
    for stale in (
        {"step": config.num_steps - 1},
        {"config_fingerprint": "0"},
        {"schema_version": 1},
    ):
        with open(path, "w") as f:
            json.dump({**metrics, **stale}, f)
        assert ablation.run_state(config) == "todo", stale


@pytest.mark.slow
def test_ablation_runs_and_resumes_one_tiny_run(tmp_path, capsys):
    tiny = dict(
        ngf=4, ndf=4, video_batch=2, image_batch=2, video_length=13, ae_size="small",
        ae_width_divisor=8, ae_batch=4, ae_num_steps=2, num_steps=2, checkpoint_every=1,
        sample_every=0, log_every=1, num_generate=1,
    )  # fmt: skip
    args = _args(
        tmp_path, "--dataset", "synthetic_faces/small", "--data_dir", str(tmp_path / "tfds"),
        "--seeds", "0", "--only", "m3_unseen_seed0",
    )  # fmt: skip
    from vice_gan.evaluation import in_domain

    nets = in_domain.TrainSettings(emotion_steps=2, identity_steps=2, clip_batch=2, frame_batch=4)
    report_path = ablation.run_all(args, tiny, nets, compilation_cache=False)
    assert os.path.exists(report_path)
    _, _, config = ablation.plan(args, tiny)[0]
    assert ablation.run_state(config) == "done"
    capsys.readouterr()
    ablation.run_all(args, tiny, nets, compilation_cache=False)
    assert "finished earlier, skipped" in capsys.readouterr().out
