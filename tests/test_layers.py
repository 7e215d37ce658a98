"""Tests of vice_gan.models.layers: sub-pixel UpConv2x and Project1x1To4x4 equal ConvTranspose2d."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax

from vice_gan.models import layers

# (kernel_size, padding) pairs giving exactly 2H: the AEs' K2 P0 / K3 P1, and G's K4 P1.
KP = [(2, 0), (3, 1), (4, 1)]
IMPLS = ["phases", "gemm", "fused", "reference", "auto"]


def _rand(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _torch_conv_transpose_numpy(x, w, stride, padding, out_hw):
    """PyTorch's ConvTranspose2d definition as a scatter loop: out[s*i - p + a] += x[i] * W[a].

    x: [N, H, W, Cin]; w: [k, k, Cin, Cout] (PyTorch weight transposed (2, 3, 0, 1)).
    """
    n, h, wd, _ = x.shape
    k, _, _, cout = w.shape
    out = np.zeros((n, out_hw[0], out_hw[1], cout), np.float64)
    for i in range(h):
        for j in range(wd):
            for a in range(k):
                for b in range(k):
                    oy, ox = stride * i - padding + a, stride * j - padding + b
                    if 0 <= oy < out_hw[0] and 0 <= ox < out_hw[1]:
                        out[:, oy, ox] += x[:, i, j] @ w[a, b]
    return out


def _apply_upconv(impl, x, kernel, k, p, features):
    module = layers.UpConv2x(features, kernel_size=k, padding=p, impl=impl)
    return module.apply({"params": {"kernel": kernel}}, x)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("k,p", KP)
def test_upconv_equals_reference(impl, k, p):
    x, w = _rand(0, (2, 5, 7, 3)), _rand(1, (k, k, 3, 5))
    out = _apply_upconv(impl, x, w, k, p, 5)
    assert out.shape == (2, 10, 14, 5)
    np.testing.assert_allclose(out, layers.conv_transpose_reference(x, w, p), atol=1e-5)


@pytest.mark.parametrize("k,p", KP)
def test_reference_equals_pytorch_scatter_definition(k, p):
    x, w = _rand(2, (1, 3, 4, 3)), _rand(3, (k, k, 3, 2))
    want = _torch_conv_transpose_numpy(np.asarray(x), np.asarray(w), 2, p, (6, 8))
    np.testing.assert_allclose(layers.conv_transpose_reference(x, w, p), want, atol=1e-5)
    np.testing.assert_allclose(_apply_upconv("phases", x, w, k, p, 2), want, atol=1e-5)


@pytest.mark.parametrize("k,p", KP)
def test_upconv_equals_flax_conv_transpose(k, p):
    # Mapping: flax nn.ConvTranspose(transpose_kernel=False) correlates the lhs-dilated input with
    # its kernel as given, so it equals PyTorch's layer with kernel = W[::-1, ::-1] (spatial flip,
    # same [k, k, Cin, Cout] axes) and explicit padding (k-1-p, k-1-p+output_padding) per side.
    x, w = _rand(4, (2, 4, 5, 3)), _rand(5, (k, k, 3, 5))
    lo = k - 1 - p
    hi = lo + layers.output_padding(k, p)
    flax_ct = nn.ConvTranspose(
        5, (k, k), strides=(2, 2), padding=((lo, hi), (lo, hi)), use_bias=False
    )
    want = flax_ct.apply({"params": {"kernel": w[::-1, ::-1]}}, x)
    np.testing.assert_allclose(_apply_upconv("phases", x, w, k, p, 5), want, atol=1e-5)


@pytest.mark.parametrize("impl", ["phases", "gemm", "fused"])
@pytest.mark.parametrize("k,p", KP)
def test_upconv_vjp_equals_reference(impl, k, p):
    x, w = _rand(6, (2, 4, 6, 3)), _rand(7, (k, k, 3, 5))
    ct = _rand(8, (2, 8, 12, 5))
    _, vjp = jax.vjp(lambda x, w: _apply_upconv(impl, x, w, k, p, 5), x, w)
    _, vjp_ref = jax.vjp(lambda x, w: layers.conv_transpose_reference(x, w, p), x, w)
    for got, want in zip(vjp(ct), vjp_ref(ct), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("k,p", KP)
def test_gemm_gradient_by_phase_equals_autodiff_of_the_scatter(k, p):
    # 'gemm' runs upconv2x_gemm_by_phase: its hand-written backward equals autodiff through
    # upconv2x_gemm (the k*k-tap gradient stack) to float32 rounding, values exactly.
    x, w = _rand(10, (2, 5, 6, 4)), _rand(11, (k, k, 4, 3))
    ct = _rand(12, (2, 10, 12, 3))
    y, vjp = jax.vjp(lambda x, w: layers.upconv2x_gemm_by_phase(x, w, p), x, w)
    y_ref, vjp_ref = jax.vjp(lambda x, w: layers.upconv2x_gemm(x, w, p), x, w)
    np.testing.assert_array_equal(y, y_ref)
    for got, want in zip(vjp(ct), vjp_ref(ct), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert float(jnp.abs(got).max()) > 0
    # bfloat16 runs: gradients in the primals' dtype, close to the float32 ones.
    xb, wb, ctb = (a.astype(jnp.bfloat16) for a in (x, w, ct))
    _, vjp_b = jax.vjp(lambda x, w: layers.upconv2x_gemm_by_phase(x, w, p), xb, wb)
    for got, want in zip(vjp_b(ctb), vjp_ref(ct), strict=True):
        assert got.dtype == jnp.bfloat16
        np.testing.assert_allclose(got.astype(jnp.float32), want, rtol=0.05, atol=0.1)


def test_gemm_gradient_by_phase_needs_less_scratch():
    # The point of the by-phase backward: XLA's scratch for the layer's gradient is smaller
    # than with the whole k*k-tap stack (G's K4 P1 layer; 6.3 -> 5.0 MiB here).
    x, w = _rand(13, (8, 16, 16, 64)), _rand(14, (4, 4, 64, 32))

    def scratch(upconv):
        loss = lambda x, w: jnp.sum(upconv(x, w, 1) ** 2)  # noqa: E731
        compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert scratch(layers.upconv2x_gemm_by_phase) < scratch(layers.upconv2x_gemm)


def test_gemm_gradient_by_phase_chains_phases_without_a_reduction():
    # Each phase waits for one element of the previous phase's products, not for their sum:
    # XLA:CPU's legacy emitters (the train steps' compiler option) compiled jnp.sum over this
    # layer's kernel gradient (G's UpConv2x_2 at ngf=16) as a 32x32 reduce-window, ~3 s of LLVM
    # time per phase in the GAN step (BENCHMARKS.md, "Compile time").
    from vice_gan import xla_options

    x, w = _rand(15, (2, 16, 16, 32)), _rand(16, (4, 4, 32, 16))
    ct = _rand(17, (2, 32, 32, 16))

    def grads(x, w):
        return jax.vjp(lambda x, w: layers.upconv2x_gemm_by_phase(x, w, 1), x, w)[1](ct)

    lowered = jax.jit(grads).lower(x, w)
    hlo = lowered.compile(compiler_options=xla_options.step_options("cpu")).as_text()
    assert "reduce-window(" not in hlo and " reduce(" not in hlo
    assert hlo.count(" dot(") >= 8  # the four phases' input and kernel gradients


def test_upconv_rejects_sizes_that_do_not_double():
    x = jnp.zeros((1, 4, 4, 2))
    with pytest.raises(ValueError, match="output_padding"):
        layers.UpConv2x(3, kernel_size=2, padding=1).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="impl"):
        layers.UpConv2x(3, impl="nope").init(jax.random.key(0), x)


def test_upconv_mixed_precision_keeps_float32_params():
    x = _rand(9, (2, 4, 4, 3))
    module = layers.UpConv2x(5, dtype=jnp.bfloat16)
    variables = module.init(jax.random.key(0), x)
    assert variables["params"]["kernel"].dtype == jnp.float32
    out = module.apply(variables, x)
    assert out.dtype == jnp.bfloat16
    want = layers.conv_transpose_reference(x, variables["params"]["kernel"], 1)
    np.testing.assert_allclose(out.astype(jnp.float32), want, atol=0.05, rtol=0.05)


def test_depth_to_space_layout():
    x = _rand(10, (1, 2, 3, 4 * 5))
    y = layers.depth_to_space(x, 2)
    assert y.shape == (1, 4, 6, 5)
    for ry in range(2):
        for rx in range(2):
            c0 = (ry * 2 + rx) * 5
            np.testing.assert_array_equal(y[:, ry::2, rx::2], x[..., c0 : c0 + 5])


def test_project_1x1_to_4x4_equals_conv_transpose():
    # ConvTranspose2d(Cin, F, 4, stride=1, padding=0) on a 1x1 map = correlation of the 1x1 map,
    # padded by k-1 = 3, with the flipped kernel.
    z, w = _rand(11, (3, 7)), _rand(12, (4, 4, 7, 5))
    got = layers.Project1x1To4x4(5).apply({"params": {"kernel": w}}, z)
    want = lax.conv_general_dilated(
        z[:, None, None, :], w[::-1, ::-1], (1, 1), ((3, 3), (3, 3)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )  # fmt: skip
    assert got.shape == (3, 4, 4, 5)
    np.testing.assert_allclose(got, want, atol=1e-5)
    scatter = _torch_conv_transpose_numpy(np.asarray(z)[:, None, None], np.asarray(w), 1, 0, (4, 4))
    np.testing.assert_allclose(got, scatter, atol=1e-5)


def test_initialisers_match_pytorch_statistics():
    # DCGAN N(0, 0.02) kernels, BN scale N(1, 0.02); He-normal std sqrt(2 / (k*k*Cin)).
    key = jax.random.key(14)
    w = layers.dcgan_kernel_init(key, (4, 4, 64, 32))
    assert w.shape == (4, 4, 64, 32) and abs(float(jnp.std(w)) - 0.02) < 0.001
    s = layers.dcgan_scale_init(key, (4096,))
    assert abs(float(jnp.mean(s)) - 1.0) < 0.002 and abs(float(jnp.std(s)) - 0.02) < 0.001
    h = layers.he_normal_init(key, (3, 3, 64, 32))
    assert abs(float(jnp.std(h)) / np.sqrt(2.0 / (3 * 3 * 64)) - 1.0) < 0.05


# --- Strided convolutions as matrix products (StridedConv, VideoConv) ------------------------
# Every (kernel, stride, padding) the networks use: D_I / D_V K4 S2 P1, large encoder K3 S2 P1,
# medium K4 S4 P1 and K3 S3 P1, small K3 S1 P1 and K3 S2 P1; plus K2 S2 P0 and an odd size.
CONV_CASES = [
    (4, 2, 1, 16),
    (4, 2, 1, 9),
    (3, 2, 1, 16),
    (3, 2, 1, 7),
    (4, 4, 1, 16),
    (3, 3, 1, 4),
    (3, 3, 1, 2),
    (3, 1, 1, 6),
    (2, 2, 0, 8),
]
TAPS = ["input", "block", "output", "auto"]


def _assert_close(got, want, rel=1e-5):
    """|got - want| <= rel * max|want| elementwise: float32 sums in another order."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=rel * max(float(np.max(np.abs(want))), 1e-6))


def _vjps(fns: dict, args, ct):
    """{name: (output, grads w.r.t. every argument under cotangent ct)} under one jit."""

    @jax.jit
    def run(args, ct):
        out = {}
        for name, fn in fns.items():
            y, vjp = jax.vjp(fn, *args)
            out[name] = (y, vjp(ct))
        return out

    return run(args, ct)


def _check_all_equal(results: dict, ref: str):
    """Every entry's output and gradients equal those of `ref`."""
    want = results.pop(ref)
    for name, got in results.items():
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            try:
                _assert_close(g, w)
            except AssertionError as e:
                raise AssertionError(f"{name} differs from {ref}") from e


@pytest.mark.parametrize("k,s,p,size", CONV_CASES)
def test_strided_conv_equals_nn_conv(k, s, p, size):
    # Outputs and gradients w.r.t. input and kernel, for every form `conv_taps` offers.
    x, w = _rand(20, (2, size, size + 1, 3)), _rand(21, (k, k, 3, 5))
    flax_conv = nn.Conv(5, (k, k), strides=(s, s), padding=((p, p), (p, p)), use_bias=False)
    fns = {"nn.Conv": lambda x, w: flax_conv.apply({"params": {"kernel": w}}, x)}
    for taps in TAPS:
        for impl in ("gemm", "mixed", "block"):
            module = layers.StridedConv(5, k, stride=s, padding=p, impl=impl, taps=taps)
            fns[f"{impl}/{taps}"] = lambda x, w, m=module: m.apply({"params": {"kernel": w}}, x)
    ho, wo = (size + 2 * p - k) // s + 1, (size + 1 + 2 * p - k) // s + 1
    _check_all_equal(_vjps(fns, (x, w), _rand(22, (2, ho, wo, 5))), "nn.Conv")


def test_video_conv_equals_nn_conv3d():
    # D_V's layers: kernel (4, 4, 4), stride (1, 2, 2), padding (0, 1, 1), time VALID; and its
    # head, kernel (kt, 4, 4) VALID on the 4x4 map. Inputs [B, T, ...]; time-major inside.
    def ours(taps, time_taps, s, p):
        return lambda x, w: jnp.swapaxes(
            layers.conv_taps(jnp.swapaxes(x, 0, 1), w, s, p, taps, time_taps), 0, 1
        )

    def conv3d(kernel_size, s, p):
        pad = ((0, 0), (p, p), (p, p))
        conv = nn.Conv(5, kernel_size, strides=(1, s, s), padding=pad, use_bias=False)
        return lambda x, w: conv.apply({"params": {"kernel": w}}, x)

    x, w = _rand(23, (2, 6, 8, 10, 3)), _rand(24, (4, 4, 4, 3, 5))
    fns = {"nn.Conv": conv3d((4, 4, 4), 2, 1)}
    for taps in ("output", "block", "input"):
        for time_taps in ("stack", "sum"):
            fns[f"{taps}/{time_taps}"] = ours(taps, time_taps, 2, 1)
    _check_all_equal(_vjps(fns, (x, w), _rand(25, (2, 3, 4, 5, 5))), "nn.Conv")
    for kt in (1, 2, 4):
        x, w = _rand(26, (2, 5, 4, 4, 6)), _rand(27, (kt, 4, 4, 6, 5))
        module = layers.VideoConv(5, kt, 4)
        fns = {
            "nn.Conv": conv3d((kt, 4, 4), 1, 0),
            "VideoConv": lambda x, w, m=module: jnp.swapaxes(
                m.apply({"params": {"kernel": w}}, jnp.swapaxes(x, 0, 1)), 0, 1
            ),
            "sum": ours("auto", "sum", 1, 0),
        }
        _check_all_equal(_vjps(fns, (x, w), _rand(28, (2, 6 - kt, 1, 1, 5))), "nn.Conv")


# (x shape [T, N, H, W, C], kernel shape [kt, k, k, C, O], stride, padding, taps): D_V's first
# layer (frames stacked into channels), a K3 S2 layer (a block tap beyond k: zero taps), a K4 S2
# P0 layer whose last row and column no window reads (the input is cropped), temporal taps
# summed, and a 'block' layer (by_frame changes nothing there).
BY_FRAME_CASES = [
    ((7, 2, 8, 10, 3), (4, 4, 4, 3, 5), 2, 1, "output", "stack"),
    ((3, 3, 9, 9, 4), (1, 3, 3, 4, 6), 2, 1, "output", "stack"),
    ((4, 2, 9, 9, 3), (2, 4, 4, 3, 5), 2, 0, "output", "stack"),
    ((6, 2, 8, 8, 3), (3, 4, 4, 3, 5), 2, 1, "output", "sum"),
    ((6, 2, 8, 8, 3), (3, 4, 4, 3, 5), 2, 1, "block", "stack"),
]


@pytest.mark.parametrize("x_shape,k_shape,s,p,taps,time_taps", BY_FRAME_CASES)
@pytest.mark.parametrize("forward", ["products", "lax"])
def test_conv_by_frame_equals_all_frames_at_once(x_shape, k_shape, s, p, taps, time_taps, forward):
    # conv_taps(by_frame=True): the 'output' form's tap sums and the backward pass one output
    # frame at a time. Same output and gradients (to float32 rounding: the kernel's gradient is
    # summed over frames in another order) for each gradient alone (D_V's update
    # differentiates its kernel only, G's update its input only) and both.
    x, w = _rand(40, x_shape), _rand(41, k_shape)

    def conv(by_frame):
        return lambda x, w: layers.conv_taps(x, w, s, p, taps, time_taps, forward, by_frame)

    @jax.jit
    def outputs_and_grads(x, w, ct):
        out = {}
        for by_frame in (True, False):
            f = conv(by_frame)
            loss = lambda x, w, f=f: jnp.sum(f(x, w).astype(jnp.float32) * ct)  # noqa: E731
            grads = [jax.grad(loss, argnums=a)(x, w) for a in (0, 1, (0, 1))]
            out[by_frame] = (f(x, w), grads)
        return out

    ct = _rand(42, conv(False)(x, w).shape)
    results = outputs_and_grads(x, w, ct)
    want = jax.tree.leaves(results[False])
    for got, ref in zip(jax.tree.leaves(results[True]), want, strict=True):
        _assert_close(got, ref)
        assert float(jnp.abs(ref).max()) > 0
    if (x_shape, forward) != (BY_FRAME_CASES[0][0], "products"):
        return  # bfloat16 once (D_V's first layer), for the suite's time
    # bfloat16 runs: gradients in the primals' dtype, close to the float32 ones.
    bf16 = outputs_and_grads(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), ct)
    for got, ref in zip(jax.tree.leaves(bf16[True][1][2]), want[-2:], strict=True):
        assert got.dtype == jnp.bfloat16
        _assert_close(got.astype(jnp.float32), ref, rel=0.05)


def test_conv_by_frame_needs_less_scratch():
    # The point of by_frame: D_V's update (its kernel's gradient) holds one output frame's
    # operands and output-gradient tap stack at a time instead of all frames' (2.8 -> 1.4 MiB).
    x, w = _rand(43, (7, 4, 32, 32, 3)), _rand(44, (4, 4, 4, 3, 16))

    def scratch(by_frame):
        def loss(w):
            return jnp.sum(layers.conv_taps(x, w, 2, 1, "output", by_frame=by_frame) ** 2)

        compiled = jax.jit(jax.grad(loss)).lower(w).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert scratch(True) < 0.75 * scratch(False)


def test_conv_modules_keep_nn_conv_parameters():
    # Same parameter tree, shapes and (same key) values as nn.Conv, so checkpoints, parameter
    # counts and initialisation are unchanged.
    key = jax.random.key(29)
    x, clip = jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 6, 8, 8, 3))
    for ours, theirs, inp, ours_inp in [
        (
            layers.StridedConv(5, 3, stride=2, padding=1, kernel_init=layers.he_normal_init),
            nn.Conv(5, (3, 3), use_bias=False, kernel_init=layers.he_normal_init),
            x,
            x,
        ),
        (
            layers.VideoConv(5, 4, 4, stride=2, padding=1),
            nn.Conv(5, (4, 4, 4), use_bias=False, kernel_init=layers.dcgan_kernel_init),
            clip,
            jnp.swapaxes(clip, 0, 1),
        ),
    ]:
        a = ours.init(key, ours_inp)["params"]
        b = theirs.init(key, inp)["params"]
        assert jax.tree.structure(a) == jax.tree.structure(b)
        jax.tree.map(np.testing.assert_array_equal, a, b)


def test_native_impl_equals_gemm_impl():
    x, w = _rand(30, (2, 9, 9, 3)), _rand(31, (4, 4, 3, 5))
    got = {
        impl: layers.StridedConv(5, 4, stride=2, padding=1, impl=impl).apply(
            {"params": {"kernel": w}}, x
        )
        for impl in ("gemm", "mixed", "block", "native", "auto")
    }
    for impl in ("gemm", "mixed", "block", "auto"):
        _assert_close(got[impl], got["native"])
    assert [layers.choose_conv_impl(hw, 64) for hw in ((1, 1), (2, 2), (4, 4))] == [
        "gemm",
        "gemm",
        "mixed",
    ]
    # RGB input: the forward in 'block' form (12 channels after space-to-depth).
    assert [layers.choose_conv_impl((32, 32), c) for c in (3, 4, 5, 32)] == [
        "block",
        "block",
        "mixed",
        "mixed",
    ]
    assert layers.choose_conv_impl((2, 2), 3) == "gemm"
    with pytest.raises(ValueError, match="impl"):
        layers.StridedConv(5, 4, impl="nope").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="taps"):
        layers.strided_conv(x, w, 2, 1, taps="nope")
    with pytest.raises(ValueError, match="does not fit"):
        layers.strided_conv(x[:, :1, :1], w, 2, 0)
    with pytest.raises(ValueError, match="forward"):
        layers.conv_taps(x[None], w[None], 2, 1, forward="nope")
    # forward='lax' on clips: XLA's 2-D convs per temporal tap (`conv_slices`), same conv.
    clip, kernel = _rand(34, (5, 1, 8, 8, 3)), _rand(35, (4, 4, 4, 3, 2))
    _assert_close(
        layers.conv_taps(clip, kernel, 2, 1, forward="lax"), layers.conv_taps(clip, kernel, 2, 1)
    )


def test_space_to_depth_inverts_depth_to_space():
    x = _rand(32, (2, 3, 4, 20))
    np.testing.assert_array_equal(layers.space_to_depth(layers.depth_to_space(x, 2), 2), x)
    y = _rand(33, (2, 6, 4, 5))
    s = layers.space_to_depth(y, 2)
    assert s.shape == (2, 3, 2, 20)
    np.testing.assert_array_equal(s[..., 5:10], y[:, 0::2, 1::2])  # block (ry=0, rx=1)


@pytest.mark.parametrize(
    "phases,z_hw,out_hw",
    [
        # G's K4 P1 upconv: 2 x 2 phases, shifts -1..1, every tap used once.
        (
            tuple(
                tuple(
                    tuple(
                        (ay, ax, ey, ex)
                        for ey, ay in layers.phase_taps(4, 1)[ry]
                        for ex, ax in layers.phase_taps(4, 1)[rx]
                    )
                    for rx in (0, 1)
                )
                for ry in (0, 1)
            ),
            (5, 6),
            (5, 6),
        ),
        # conv_taps' 'output' form: one phase, z one block larger than the output.
        (((((0, 0, 0, 0), (0, 1, 0, 1), (1, 0, 1, 0), (1, 1, 1, 1)),),), (5, 7), (4, 6)),
        # Tap (1, 1) in no phase (its gradient is zero); shifts past z's edge on both sides.
        (((((0, 0, -2, 0), (1, 0, 3, -1)), ((0, 1, 0, 2),)),), (4, 5), (4, 3)),
    ],
)
def test_shifted_tap_sums_equal_their_autodiff(phases, z_hw, out_hw):
    # The written-out gradient against autodiff of the same forward (slices, pads, sums);
    # the forward against a direct loop over output pixels.
    na = 1 + max(t[0] for row in phases for terms in row for t in terms)
    nb = 1 + max(t[1] for row in phases for terms in row for t in terms)
    z = _rand(40, (2, *z_hw, na, nb, 3))
    py, px = len(phases), len(phases[0])
    want = np.zeros((2, out_hw[0], py, out_hw[1], px, 3), np.float32)
    zn = np.asarray(z)
    for qy in range(py):
        for qx in range(px):
            for a, b, oy, ox in phases[qy][qx]:
                for m in range(out_hw[0]):
                    for n in range(out_hw[1]):
                        if 0 <= m + oy < z_hw[0] and 0 <= n + ox < z_hw[1]:
                            want[:, m, qy, n, qx] += zn[:, m + oy, n + ox, a, b]
    got, vjp = jax.vjp(lambda z: layers.shifted_tap_sums(z, phases, out_hw), z)
    np.testing.assert_allclose(got, want, atol=1e-5)
    ct = _rand(41, got.shape)
    _, vjp_auto = jax.vjp(lambda z: layers._tap_sums_forward(phases, out_hw, z), z)
    (dz,), (dz_auto,) = vjp(ct), vjp_auto(ct)
    np.testing.assert_array_equal(dz, dz_auto)
    assert float(jnp.max(jnp.abs(dz))) > 0


@pytest.mark.parametrize(
    "k,s,hw,out_hw",
    [
        (3, 2, (66, 66), (32, 32)),  # the encoder's K3 S2 P1 layers: row 65 is read by no window
        (3, 2, (9, 8), (4, 3)),
        (4, 2, (10, 11), (4, 4)),
        (5, 3, (14, 13), (4, 3)),
        (2, 3, (8, 8), (3, 3)),  # k < s: no taps in some phases, autodiff's slices
    ],
)
def test_im2col_gradient_equals_autodiff_of_its_slices(k, s, hw, out_hw):
    xp = _rand(50, (2, *hw, 3))
    got, vjp = jax.vjp(lambda x: layers.im2col(x, k, s, out_hw), xp)
    want, vjp_auto = jax.vjp(lambda x: layers._im2col_slices(x, k, s, out_hw), xp)
    np.testing.assert_array_equal(got, want)
    ct = _rand(51, got.shape)
    (dx,), (dx_auto,) = vjp(ct), vjp_auto(ct)
    np.testing.assert_allclose(dx, dx_auto, rtol=1e-6, atol=1e-6)
    assert float(jnp.max(jnp.abs(dx))) > 0
