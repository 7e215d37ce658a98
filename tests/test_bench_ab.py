"""Tests of experiments/bench_ab.py's variant parsing and ratios (the timing itself is a
benchmark, not a test)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments"))

import bench_ab  # noqa: E402


def test_parse_variant_takes_the_step_switches():
    assert bench_ab.parse_variant("").dvid_impl is None
    args = bench_ab.parse_variant("--dvid_impl mixed --encoder_chunk 0 --render_twice")
    assert (args.dvid_impl, args.encoder_chunk, args.render_twice) == ("mixed", 0, True)


@pytest.mark.parametrize(
    "text", ["--steps 3", "--configs 32", "--dvid_impl bogus", "--encoder_chunk -1", "--x"]
)
def test_parse_variant_rejects_other_switches(text, capsys):
    with pytest.raises(ValueError, match="variant"):
        bench_ab.parse_variant(text)


def test_ratio_rows_per_round_against_the_first_variant():
    rows = bench_ab.ratio_rows(["", "b"], [[1.0, 2.0, 3.0], [0.5, 2.0, 6.0]])
    assert rows[0]["ratio_per_round"] == [1.0, 1.0, 1.0]
    assert rows[1]["ratio_per_round"] == [2.0, 1.0, 0.5]
    assert rows[1]["ratio_median"] == 1.0
    assert (rows[1]["sec_per_step_median"], rows[1]["sec_per_step_min"]) == (2.0, 0.5)


def test_variant_values_may_start_with_a_dash():
    argv = ["--config", "32", "--variant", "", "--variant", "--keep_activations", "--variant"]
    assert bench_ab.join_variant_values(argv) == [
        "--config",
        "32",
        "--variant=",
        "--variant=--keep_activations",
        "--variant",  # no value: argparse reports it
    ]
