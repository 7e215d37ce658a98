"""Tests of experiments/profile_step.py's trace reading and operation grouping."""

import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments"))

import profile_step  # noqa: E402


def test_classify_by_network_direction_and_kind():
    fwd = "jit(step)/jvp(VideoDiscriminator)/Conv_1/dot_general"
    bwd = "jit(step)/transpose(jvp(Encoder))/Conv_2/transpose(jvp())/dot_general"
    assert profile_step.classify("ynn_fusion.3", fwd) == ("VideoDiscriminator", "fwd", "ynn:dot")
    assert profile_step.classify("ynn_fusion", bwd) == ("Encoder", "bwd", "ynn:dot")
    conv = "jit(step)/jvp(Encoder)/Conv_0/conv_general_dilated"
    assert profile_step.classify("ynn_fusion.7", conv)[2] == "ynn:conv"
    assert profile_step.classify("concatenate_bitcast_fusion.7", fwd)[2] == "copy"
    assert profile_step.classify("wrapped_pad", fwd)[2] == "copy"
    assert profile_step.classify("add_bitcast_fusion.1", bwd)[2] == "fusion"
    assert profile_step.classify("multiply_add_fusion", "")[0] == "other"


def test_op_times_reads_the_profiler_trace():
    f = jax.jit(lambda x: jnp.tanh(x @ x.T) * 2.0)
    x = jnp.ones((64, 64))
    compiled = f.lower(x).compile()
    meta = profile_step.op_metadata(compiled.as_text())
    times = profile_step.op_times(compiled, (x,), reps=2)
    assert times and all(ns > 0 for ns in times.values())
    # The timed operations are the compiled module's instructions (found in its metadata).
    assert any(name in meta for name in times)


def test_its_command_line_builds_the_benchmarked_step():
    # profile_step takes benchmark.py's step switches, so every field `benchmark.build` reads
    # is there (a switch added to one script only broke the other).
    import benchmark

    args = profile_step.make_parser().parse_args(
        ["--config", "16", "--keep_activations", "--render_twice", "--upconv_impl", "gemm"]
    )
    config, models, _ = benchmark.build(args, args.config)
    assert not config.recompute_activations and not config.reuse_fakes
    assert models.generator.upconv_impl == "gemm"
    assert config.ngf == benchmark.CONFIGS["16"][0]
