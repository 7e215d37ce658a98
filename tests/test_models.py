"""Tests of vice_gan.models: shapes, ranges, errors, BatchNorm under shard_map, determinism."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from vice_gan.models import autoencoder, discriminators, generator, motion

B, T = 2, 16  # two 16-frame clips of 64x64 RGB
KEY = jax.random.key(0)


def _rand(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _frames(seed, n):
    return jnp.tanh(_rand(seed, (n, 64, 64, 3)))


def _init_and_train(module, *args):
    """Initialises `module` and runs one train-mode pass, under one jit (one compile)."""

    @jax.jit
    def run(*args):
        variables = module.init(KEY, *args, train=False)
        out, _ = module.apply(variables, *args, train=True, mutable=["batch_stats"])
        return variables, out

    return run(*args)


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("size", autoencoder.SIZES)
@pytest.mark.parametrize("ae_type", autoencoder.AE_TYPES)
def test_autoencoder_shapes_and_encoder_alone(ae_type, size):
    model = autoencoder.make_autoencoder(ae_type, size, width_divisor=8)
    enc = autoencoder.Encoder(size=size, ae_type=ae_type, width_divisor=8)

    @jax.jit  # one compile per variant: init, train-mode and eval-mode passes together
    def run(x):
        variables = model.init(KEY, x, train=False)
        (recon, mean, logvar), _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
        # The GAN stage applies the encoder alone with the autoencoder's 'encoder' subtrees.
        sub = {k: v["encoder"] for k, v in variables.items()}
        mean_alone, _ = enc.apply(sub, x, train=False)
        _, mean_eval, _ = model.apply(variables, x, train=False)
        return recon, mean, logvar, mean_alone, mean_eval

    recon, mean, logvar, mean_alone, mean_eval = run(_frames(1, B))
    assert recon.shape == (B, 64, 64, 3)
    assert float(jnp.max(jnp.abs(recon))) <= 1.0
    assert mean.shape == (B, 50)
    assert (logvar is None) == (ae_type == "sae")
    if ae_type == "vae":
        assert logvar.shape == (B, 50)
    np.testing.assert_allclose(mean_alone, mean_eval, atol=1e-6)


def test_vae_reparameterisation_uses_eps():
    vae = autoencoder.make_autoencoder("vae", "small", width_divisor=8)
    sae = autoencoder.make_autoencoder("sae", "small", width_divisor=8)
    x, eps = _frames(2, B), _rand(3, (B, 50))

    @jax.jit
    def run(x, eps):
        variables = vae.init(KEY, x, train=False)
        apply = functools.partial(vae.apply, variables, train=False)
        recon_mean, mean, logvar = apply(x)
        recon_zero = apply(x, jnp.zeros_like(eps))[0]
        recon_eps, mean_eps, _ = apply(x, eps)
        z = mean + jnp.exp(0.5 * logvar) * eps
        recon_z = apply(z, method=autoencoder.Autoencoder.decode)
        sv = sae.init(KEY, x, train=False)
        sae_pair = (sae.apply(sv, x, eps, train=False)[0], sae.apply(sv, x, train=False)[0])
        return recon_mean, recon_zero, recon_eps, recon_z, mean, mean_eps, sae_pair

    recon_mean, recon_zero, recon_eps, recon_z, mean, mean_eps, sae_pair = run(x, eps)
    np.testing.assert_allclose(recon_zero, recon_mean, atol=1e-6)
    np.testing.assert_allclose(mean_eps, mean, atol=1e-6)  # the code itself does not move
    assert float(jnp.max(jnp.abs(recon_eps - recon_mean))) > 1e-4
    np.testing.assert_allclose(recon_eps, recon_z, atol=1e-6)  # decoded mean + std * eps
    np.testing.assert_array_equal(*sae_pair)  # the SAE ignores eps


def test_autoencoder_rejects_unknown_names():
    with pytest.raises(ValueError, match="ae_type"):
        autoencoder.make_autoencoder("gan", "small")
    with pytest.raises(ValueError, match="size"):
        autoencoder.make_autoencoder("sae", "huge")


def test_generator_shape_and_range():
    g = generator.Generator(ngf=4)
    z = _rand(4, (B * T, 66)) * 3.0
    _, frames = _init_and_train(g, z)
    assert frames.shape == (B * T, 64, 64, 3) and frames.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(frames))) <= 1.0


def test_image_discriminator_shape():
    d = discriminators.ImageDiscriminator(ndf=4)
    x = _frames(5, B)
    _, logits = _init_and_train(d, x)
    assert logits.shape == (B, 4, 4, 1)


@pytest.mark.parametrize("t", [13, 16, 20])
def test_video_discriminator_shape(t):
    d = discriminators.VideoDiscriminator(ndf=4)
    x = _frames(6, B * t).reshape(B, t, 64, 64, 3)
    if t == T:
        variables, logits = _init_and_train(d, x)
    else:  # other lengths: shapes only (abstract evaluation, no compile)
        variables = jax.eval_shape(functools.partial(d.init, train=False), KEY, x)
        logits = jax.eval_shape(functools.partial(d.apply, train=False), variables, x)
    assert logits.shape == (B, 7)
    # The last layer's temporal kernel is min(4, T - 12); the rest is averaged.
    assert variables["params"]["Conv_4"]["kernel"].shape[0] == min(4, t - 12)


def test_video_discriminator_rejects_short_clips():
    d = discriminators.VideoDiscriminator(ndf=4)
    with pytest.raises(ValueError, match="T >= 13"):
        d.init(KEY, jnp.zeros((1, 12, 64, 64, 3)), train=False)


@pytest.mark.parametrize("d_in", [10, 16])  # noise only / noise + one-hot category
def test_motion_net(d_in):
    net = motion.MotionNet(hidden=10)
    cell = nn.GRUCell(features=10)

    @jax.jit
    def run(h0, eps):
        variables = net.init(KEY, h0, eps)
        # z_m[t] = h_t: the first output is one GRU step from h0 (not h0 itself).
        h1, _ = cell.apply({"params": variables["params"]["gru"]}, h0, eps[:, 0])
        return net.apply(variables, h0, eps), h1

    z_m, h1 = run(_rand(7, (B, 10)), _rand(8, (B, T, d_in)))
    assert z_m.shape == (B, T, 10)
    np.testing.assert_allclose(z_m[:, 0], h1, atol=1e-6)


def test_parameter_counts_match_pytorch_peer():
    # Counts of shared/bench/torch_peer.py's networks at full width (shapes only, no compute).
    g, d = 64, 64

    def n_params(module, *args, **kw):
        shapes = jax.eval_shape(lambda: module.init(KEY, *args, **kw))
        return _count(shapes["params"])

    x = jnp.zeros((1, 64, 64, 3))
    expect_g = 16 * (66 * 8 * g + 32 * g * g + 8 * g * g + 2 * g * g + 3 * g) + 2 * 15 * g
    assert n_params(generator.Generator(g), jnp.zeros((1, 66)), train=False) == expect_g
    expect_di = 16 * (3 * d + 2 * d * d + 8 * d * d + 4 * d) + 2 * 6 * d
    assert n_params(discriminators.ImageDiscriminator(d), x, train=False) == expect_di
    expect_dv = 64 * (3 * d + 2 * d * d + 8 * d * d + 32 * d * d) + 64 * 8 * d * 7 + 2 * 14 * d
    clip = jnp.zeros((1, 16, 64, 64, 3))
    assert n_params(discriminators.VideoDiscriminator(d), clip, train=False) == expect_dv
    chans = [3, 32, 64, 128, 256, 512]
    convs = sum(9 * a * b for a, b in zip(chans[:-1], chans[1:], strict=True))
    expect_e = convs + 2 * sum(chans[1:]) + 2048 * 50 + 50
    assert n_params(autoencoder.Encoder("large", "sae"), x, train=False) == expect_e
    # PyTorch's GRUCell has 660: its r/z gates carry two (redundant) biases, Flax's one.
    assert n_params(motion.MotionNet(), jnp.zeros((1, 10)), jnp.zeros((1, T, 10))) == 640


def test_batchnorm_axis_name_under_shard_map():
    # G's BatchNorms over 2 devices x 2 latents must equal BatchNorm over 4 latents on 1 device
    # (outputs and running statistics); every network builds its BN with `layers.batch_norm`.
    n_dev = 2
    assert jax.device_count() >= n_dev
    mesh = jax.make_mesh((n_dev,), ("batch",), devices=jax.devices()[:n_dev])
    x = _rand(9, (4, 66))
    variables = jax.jit(functools.partial(generator.Generator(ngf=4).init, train=False))(KEY, x)
    # Make the running statistics non-trivial so the comparison covers the momentum update.
    variables = {
        **variables,
        "batch_stats": jax.tree.map(lambda v: v + 0.5, variables["batch_stats"]),
    }

    def run(axis_name, variables, x):
        g = generator.Generator(ngf=4, axis_name=axis_name)
        return g.apply(variables, x, train=True, mutable=["batch_stats"])

    want_out, want_stats = jax.jit(functools.partial(run, None))(variables, x)
    sharded = jax.shard_map(
        functools.partial(run, "batch"),
        mesh=mesh,
        in_specs=(P(), P("batch")),
        out_specs=(P("batch"), P()),
    )
    # shard_map takes arguments already laid out as its in_specs say.
    put = functools.partial(jax.device_put, device=NamedSharding(mesh, P()))
    xs = jax.device_put(x, NamedSharding(mesh, P("batch")))
    got_out, got_stats = jax.jit(sharded)(put(variables), xs)
    np.testing.assert_allclose(got_out, want_out, atol=1e-5)
    for g, w in zip(jax.tree.leaves(got_stats), jax.tree.leaves(want_stats), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    # Without the axis name the shards' statistics differ (so the check above has teeth).
    unsynced = jax.shard_map(
        functools.partial(run, None),
        mesh=mesh,
        in_specs=(P(), P("batch")),
        out_specs=(P("batch"), P("batch")),
    )
    bad_out, _ = jax.jit(unsynced)(put(variables), xs)
    assert float(jnp.max(jnp.abs(bad_out - want_out))) > 1e-4


def test_same_key_gives_same_params():
    x, z = _frames(10, B), _rand(11, (B, 66))
    nets = [
        (generator.Generator(ngf=4), (z,), {"train": False}),
        (discriminators.ImageDiscriminator(ndf=4), (x,), {"train": False}),
        (autoencoder.make_autoencoder("vae", "small", width_divisor=8), (x,), {"train": False}),
        (motion.MotionNet(), (z[:, :10], _rand(12, (B, T, 10))), {}),
    ]
    init_all = jax.jit(lambda key: [m.init(key, *args, **kw)["params"] for m, args, kw in nets])
    a, b, c = init_all(jax.random.key(3)), init_all(jax.random.key(3)), init_all(jax.random.key(4))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    for pa, pc in zip(a, c, strict=True):
        assert any(
            not np.array_equal(u, v)
            for u, v in zip(jax.tree.leaves(pa), jax.tree.leaves(pc), strict=False)
        )


def test_mixed_precision_generator_keeps_float32_params():
    g = generator.Generator(ngf=4, dtype=jnp.bfloat16)
    z = _rand(13, (B, 66))
    variables, frames = _init_and_train(g, z)
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(variables))
    assert frames.dtype == jnp.float32 and frames.shape == (B, 64, 64, 3)


def _grads_by_impl(make, impls, x):
    """Output and gradients (w.r.t. params and input) of a train-mode pass for each conv_impl:
    'gemm' (products, layers.conv_taps), 'mixed' (lax forward, products backward), 'block'
    (products in 'block' form forward), 'native' (nn.Conv's lax conv)."""
    modules = {impl: make(impl) for impl in impls}

    @jax.jit
    def run(x):
        variables = modules["native"].init(KEY, x, train=False)
        out = {}
        for name, module in modules.items():

            def loss(params, x, module=module):
                y, _ = module.apply(
                    {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
                )
                y = y[0] if isinstance(y, tuple) else y
                return jnp.sum(jnp.sin(3.0 * y)), y

            (_, y), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(variables["params"], x)
            out[name] = (y, grads)
        return out

    return run(x)


@pytest.mark.parametrize("net", ["dimg", "dvid", "enc_small", "enc_medium", "enc_large"])
def test_conv_impls_equal_native(net):
    # The fast convolutions change no number: outputs and every gradient agree with nn.Conv's
    # computation to float32 rounding (relative to each array's magnitude).
    if net == "dimg":
        make, x = lambda i: discriminators.ImageDiscriminator(ndf=4, conv_impl=i), _frames(14, B)
    elif net == "dvid":  # other T: tests/test_layers.py checks the head's time averaging
        make = lambda i: discriminators.VideoDiscriminator(ndf=2, conv_impl=i)  # noqa: E731
        x = _frames(15, B * T).reshape(B, T, 64, 64, 3)
    else:
        size = net.split("_")[1]
        make = lambda i: autoencoder.Encoder(  # noqa: E731
            size=size, ae_type="sae", width_divisor=8, conv_impl=i
        )
        x = _frames(16, 3)
    if net == "dvid":
        impls = ("auto", "gemm", "mixed", "slices", "winograd", "winograd_mixed", "native")
    else:
        impls = ("auto", "gemm", "mixed", "block", "native")
    # BatchNorm over 3 frames divides by small-batch deviations, which magnifies rounding: the
    # encoders' 'block' forward differed from nn.Conv's by 3.5e-5 of a BN gradient's scale
    # here, and agrees in float64 (`test_encoder_block_impl_is_exact_in_float64`).
    tol = 2e-5 if net in ("dimg", "dvid") else 5e-5
    got = _grads_by_impl(make, impls, x)
    want = jax.tree.leaves(got.pop("native"))
    for impl, tree in got.items():
        leaves = jax.tree.leaves(tree)
        assert len(leaves) == len(want), impl
        for a, b in zip(leaves, want, strict=True):
            scale = max(float(jnp.max(jnp.abs(b))), 1e-6)
            np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale, err_msg=impl)


def test_encoder_block_impl_is_exact_in_float64():
    # The 5e-5 bound above is float32 rounding, not an error of the 'block' form: computed in
    # float64 the same encoder pass agrees with nn.Conv's to float64 rounding.
    with jax.enable_x64(True):
        make = lambda i: autoencoder.Encoder(  # noqa: E731
            size="small", ae_type="sae", width_divisor=8, conv_impl=i, dtype=jnp.float64
        )
        got = _grads_by_impl(make, ("block", "native"), _frames(16, 3).astype(jnp.float64))
    leaves = list(zip(jax.tree.leaves(got["block"]), jax.tree.leaves(got["native"]), strict=True))
    assert any(b.dtype == jnp.float64 for _, b in leaves)  # the frames' gradient
    for a, b in leaves:
        # float32 leaves (the parameters' gradients, the codes) are float64 results rounded
        # once: within one float32 ulp of the largest value.
        rel = 1e-12 if b.dtype == jnp.float64 else 2.5e-7
        scale = max(float(jnp.max(jnp.abs(b))), 1e-6)
        np.testing.assert_allclose(a, b, rtol=0, atol=rel * scale)


def test_conv_layers_keep_nn_conv_parameter_names():
    # Checkpoints and parameter trees from nn.Conv-based code keep loading: Conv_0, Conv_1, ...
    clip = jnp.zeros((1, 16, 64, 64, 3))
    shapes = jax.eval_shape(
        lambda: discriminators.VideoDiscriminator(ndf=2).init(KEY, clip, train=False)
    )["params"]
    assert sorted(shapes) == [f"BatchNorm_{i}" for i in range(3)] + [f"Conv_{i}" for i in range(5)]
    assert shapes["Conv_0"]["kernel"].shape == (4, 4, 4, 3, 2)
    enc = jax.eval_shape(
        lambda: autoencoder.Encoder("large", "sae", width_divisor=8).init(
            KEY, jnp.zeros((1, 64, 64, 3)), train=False
        )
    )["params"]
    assert [f"Conv_{i}" for i in range(5)] == sorted(k for k in enc if k.startswith("Conv"))
    assert enc["Conv_0"]["kernel"].shape == (3, 3, 3, 4)
