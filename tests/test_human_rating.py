"""CAS-H: export, the rating page driven by headless Chromium, and the scorer.

The page test needs Debian's `chromium`; the fixture installs it with apt-get when absent and
skips (saying why) only if that fails. The page's autotest hook (rating_page.html) answers every
clip through its buttons with a seeded mulberry32 PRNG and dumps the answers JSON into
<pre id="answers">; the test recomputes the same PRNG to know the expected answers.
"""

import html
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from vice_gan import labels
from vice_gan.evaluation import human_rating

CHROMIUM = "/usr/bin/chromium"
# Without the networking switches Chromium tries to reach Google's servers (closed here).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=10000",
    "--run-all-compositor-stages-before-draw",
)


@pytest.fixture(scope="session")
def chromium():
    if not os.path.exists(CHROMIUM):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            if shutil.which("apt-get") is None:
                raise OSError("apt-get not found")
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
            subprocess.run(
                ["apt-get", "install", "-y", "chromium", "chromium-driver"],
                env=env,
                capture_output=True,
                timeout=1200,
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as e:
            pytest.skip(f"RATING PAGE NOT TESTED: chromium missing and apt-get install failed: {e}")
    return CHROMIUM


def _items(models=("m1_seen", "m2_seen"), per_emotion=2):
    rng = np.random.default_rng(0)
    return [
        {
            "frames": rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8),
            "model": m,
            "emotion": e,
            "subject": f"s{i}",
        }
        for m in models
        for e in labels.EMOTIONS
        for i in range(per_emotion)
    ]


def _mulberry32_choices(seed: int, n: int, k: int) -> list[int]:
    """The page's PRNG (rating_page.html), in Python."""
    s, out = (seed & 0xFFFFFFFF) or 1, []
    m = 0xFFFFFFFF
    for _ in range(n):
        s = (s + 0x6D2B79F5) & m
        t = s
        t = ((t ^ (t >> 15)) * (t | 1)) & m
        t ^= (t + (((t ^ (t >> 7)) * (t | 61)) & m)) & m
        out.append(int(((t ^ (t >> 14)) & m) / 4294967296 * k))
    return out


def test_page_is_blind_and_shuffled(tmp_path):
    key = human_rating.write_page(_items(), str(tmp_path / "x"), seed=3)
    page = (tmp_path / "x" / "page" / "index.html").read_text()
    clips = sorted(os.listdir(tmp_path / "x" / "page" / "clips"))
    assert len(clips) == 24 and sorted(key["clips"]) == clips
    for name in clips:
        assert re.fullmatch(r"[0-9a-f]{16}\.gif", name)
    assert "m1_seen" not in page and "happiness" in page  # emotions only as button labels
    assert not (tmp_path / "x" / "page" / "key.json").exists()
    shown = json.loads(re.search(r'id="config" type="application/json">(.*?)</script>', page)[1])
    order = [key["clips"][c]["emotion"] for c in shown["clips"]]
    assert order != sorted(order, key=labels.EMOTIONS.index)  # not grouped by emotion
    with pytest.raises(human_rating.RatingError, match="already holds an export"):
        human_rating.write_page(_items(), str(tmp_path / "x"), seed=3)


def test_rating_page_in_headless_chromium(chromium, tmp_path):
    key = human_rating.write_page(_items(), str(tmp_path / "x"), seed=0)
    url = f"file://{tmp_path}/x/page/index.html?autotest=7"
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'<pre id="answers"([^>]*)>(.*?)</pre>', result.stdout, re.S)
    assert found, result.stdout[-2000:]
    assert 'data-download="blob:"' in found[1]  # the save link holds a Blob URL
    record = json.loads(html.unescape(found[2]))
    assert record["page_id"] == key["page_id"] and record["finished"]
    assert record["rater"] == "autotest-7"
    shown = json.loads(
        re.search(r'id="config" type="application/json">(.*?)</script>', result.stdout, re.S)[1]
    )["clips"]
    assert [a["clip"] for a in record["answers"]] == shown
    expected = [labels.EMOTIONS[k] for k in _mulberry32_choices(7, len(shown), 6)]
    assert [a["answer"] for a in record["answers"]] == expected
    # The scorer turns the saved file into accuracies that match a hand count.
    answers_path = tmp_path / "answers.json"
    answers_path.write_text(json.dumps(record))
    scores = human_rating.score(key, human_rating.read_answers(key, [str(answers_path)]))
    for model in ("m1_seen", "m2_seen"):
        mine = [(key["clips"][c]["emotion"], a) for c, a in zip(shown, expected, strict=True)]
        mine = [
            (t, a)
            for (t, a), c in zip(mine, shown, strict=True)
            if key["clips"][c]["model"] == model
        ]
        assert scores[model]["count"] == 12
        assert scores[model]["accuracy"] == pytest.approx(np.mean([t == a for t, a in mine]))


def _key_and_answers(tmp_path):
    clips = {
        "a.gif": {"model": "A", "emotion": "anger"},
        "b.gif": {"model": "A", "emotion": "fear"},
        "c.gif": {"model": "A", "emotion": "fear"},
        "d.gif": {"model": "B", "emotion": "anger"},
    }
    key = {"format": human_rating.KEY_FORMAT, "page_id": "p1", "seed": 0, "clips": clips}
    rater1 = {
        "format": human_rating.ANSWERS_FORMAT,
        "page_id": "p1",
        "answers": [
            {"clip": "a.gif", "answer": "anger"},
            {"clip": "b.gif", "answer": "fear"},
            {"clip": "c.gif", "answer": "sadness"},
            {"clip": "d.gif", "answer": "disgust"},
        ],
    }
    rater2 = {**rater1, "answers": [{"clip": "a.gif", "answer": "fear"}]}
    paths = []
    for i, record in enumerate((rater1, rater2)):
        paths.append(str(tmp_path / f"r{i}.json"))
        with open(paths[-1], "w") as f:
            json.dump(record, f)
    key_path = tmp_path / "key.json"
    key_path.write_text(json.dumps(key))
    return key, key_path, paths


def test_scorer_on_hand_made_answers(tmp_path):
    key, key_path, paths = _key_and_answers(tmp_path)
    scores = human_rating.score(key, human_rating.read_answers(key, paths))
    # A: anger 1 of 2 raters right, fear 1 of 2 clips right -> CAS-H (0.5 + 0.5) / 2.
    assert scores["A"]["anger"] == 0.5 and scores["A"]["fear"] == 0.5
    assert scores["A"]["cas_h"] == 0.5 and scores["A"]["count"] == 4
    assert scores["A"]["accuracy"] == 0.5 and np.isnan(scores["A"]["happiness"])
    assert scores["B"]["cas_h"] == 0.0 and scores["B"]["anger/count"] == 1
    table = human_rating.to_markdown(scores)
    assert "| A | 0.50 | - | 0.50 | - | - | - | 0.500 | 4 |" in table


def test_score_cli_writes_markdown_and_png(tmp_path, capsys):
    _, key_path, paths = _key_and_answers(tmp_path)
    out = tmp_path / "scores"
    assert (
        human_rating._main(
            ["score", "--key", str(key_path), "--answers", *paths, "--out", str(out)]
        )
        == 0
    )
    assert "| B |" in capsys.readouterr().out
    assert (out / "cas_h.md").exists() and (out / "cas_h.png").stat().st_size > 1000


def test_scorer_refuses_foreign_answers(tmp_path, capsys):
    key, key_path, paths = _key_and_answers(tmp_path)
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"format": human_rating.ANSWERS_FORMAT, "page_id": "zz"}))
    assert human_rating._main(["score", "--key", str(key_path), "--answers", str(foreign)]) == 1
    assert "answers page 'zz'" in capsys.readouterr().err
    unknown = tmp_path / "unknown.json"
    record = {"format": human_rating.ANSWERS_FORMAT, "page_id": "p1"}
    unknown.write_text(json.dumps({**record, "answers": [{"clip": "z.gif", "answer": "fear"}]}))
    with pytest.raises(human_rating.RatingError, match="not in the key"):
        human_rating.read_answers(key, [str(unknown)])


def test_export_from_a_run(tmp_path):
    from test_translate import make_untrained_run

    config = make_untrained_run(tmp_path / "r")
    key = human_rating.export([config.workdir], per_emotion=2, out=str(tmp_path / "x"), seed=1)
    assert len(key["clips"]) == 12
    by_emotion = {}
    for item in key["clips"].values():
        assert item["model"] == "m4_seen" and item["run"] == config.workdir
        by_emotion[item["emotion"]] = by_emotion.get(item["emotion"], 0) + 1
    assert by_emotion == {e: 2 for e in labels.EMOTIONS}
    assert len(os.listdir(tmp_path / "x" / "page" / "clips")) == 12
