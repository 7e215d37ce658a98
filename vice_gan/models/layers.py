"""Shared layers: exact, XLA:CPU-fast forms of the networks' convolutions, and initialisers.

`UpConv2x` is PyTorch's `ConvTranspose2d(stride=2)` computed in sub-pixel or matrix-product
form, because XLA:CPU runs stride-2 transposed convolutions (a convolution of a zero-dilated
input) several times slower than PyTorch/oneDNN. `Project1x1To4x4` is the generator's first layer
(a stride-1 transposed convolution of a 1x1 map), which is just a matrix product.
`StridedConv` (2-D) and `VideoConv` (3-D, time-major) are nn.Conv without bias, computed by
`conv_taps` as space-to-depth + matrix products, because XLA:CPU's gradients of strided and 3-D
convolutions are one to two orders of magnitude slower than its matrix products; `VideoConv`
shares work between D_V's temporal taps by Winograd's algorithm (`winograd.py`). All tensors
are channels-last (NHWC; clips [T, B, H, W, C] inside `VideoConv`).

Kernel convention (UpConv2x, Project1x1To4x4): the parameter 'kernel' has shape
[k, k, C_in, C_out] and uses PyTorch's *scatter* convention, i.e. it is PyTorch's weight
[C_in, C_out, k, k] transposed to (2, 3, 0, 1), with no spatial flip: per spatial dimension,
out[s*i - p + a] += x[i] * W[a]. StridedConv / VideoConv keep nn.Conv's cross-correlation kernel
[(kt,) k, k, C_in, C_out] (PyTorch's Conv weight transposed to (2, 3, 1, 0) / (2, 3, 4, 1, 0)).
"""

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import lax

from vice_gan.models import remat, winograd

Dtype = jnp.dtype | type
Initializer = Callable[..., jax.Array]


def _flat_normal(key: jax.Array, shape: Sequence[int], dtype) -> jax.Array:
    # Drawn flat, then reshaped: same distribution, but with JAX's partitionable threefry (the
    # default) a rank-4/5 draw compiles several times slower on XLA:CPU (D_V init: 10 s vs 1.4 s).
    return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


def dcgan_kernel_init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """Kernel ~ N(0, 0.02), as DCGAN/MoCoGAN (`nn.init.normal_(conv.weight, 0.0, 0.02)`)."""
    return 0.02 * _flat_normal(key, shape, dtype)


def he_normal_init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """PyTorch `kaiming_normal_(nonlinearity='relu')`: untruncated N(0, 2 / fan_in).

    fan_in = prod(shape[:-1]) (kernel [..., C_in, C_out]: receptive field x input channels).
    """
    return math.sqrt(2.0 / math.prod(shape[:-1])) * _flat_normal(key, shape, dtype)


def dcgan_scale_init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """BatchNorm scale ~ N(1, 0.02), as DCGAN/MoCoGAN (`nn.init.normal_(bn.weight, 1.0, 0.02)`)."""
    return 1.0 + 0.02 * _flat_normal(key, shape, dtype)


def output_padding(kernel_size: int, padding: int) -> int:
    """PyTorch `output_padding` that makes a stride-2 transposed conv output exactly 2H x 2W.

    Raises:
        ValueError: if no output_padding in {0, 1} gives 2H (e.g. kernel 2 with padding 1).
    """
    op = 2 + 2 * padding - kernel_size
    if op not in (0, 1):
        raise ValueError(
            f"stride-2 transposed conv with kernel_size={kernel_size}, padding={padding} cannot "
            f"output exactly 2H (needs output_padding={op}, PyTorch allows only 0 or 1); "
            "valid pairs include (2, 0), (3, 1), (4, 1)"
        )
    return op


def conv_transpose_reference(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
    """Plain stride-2 transposed convolution, the definition `UpConv2x` must equal.

    Same as PyTorch `ConvTranspose2d(stride=2, padding=padding, output_padding=op, bias=False)`
    with op = 2 + 2*padding - k: a stride-1 convolution of the 2x zero-dilated input with the
    spatially flipped kernel and padding (k-1-p, k-1-p+op). Used by tests and benchmarks only.

    Args:
        x: [N, H, W, C_in].
        kernel: [k, k, C_in, C_out] in PyTorch scatter convention (see module docstring).
        padding: PyTorch `padding` p.

    Returns:
        [N, 2H, 2W, C_out].
    """
    k = kernel.shape[0]
    op = output_padding(k, padding)
    lo, hi = k - 1 - padding, k - 1 - padding + op
    return lax.conv_general_dilated(
        x,
        kernel[::-1, ::-1],
        window_strides=(1, 1),
        padding=((lo, hi), (lo, hi)),
        lhs_dilation=(2, 2),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def depth_to_space(x: jax.Array, block: int) -> jax.Array:
    """Rearranges channel blocks into space: [N, H, W, b*b*C] -> [N, b*H, b*W, C].

    Channel index (ry*b + rx)*C + c goes to output pixel (b*h + ry, b*w + rx), channel c
    (TensorFlow's DCR order).
    """
    n, h, w, c = x.shape
    cout = c // (block * block)
    x = x.reshape(n, h, w, block, block, cout)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h * block, w * block, cout)


def phase_taps(kernel_size: int, padding: int) -> list[list[tuple[int, int]]]:
    """Which kernel taps feed each output phase of a 1-D stride-2 transposed convolution.

    From out[2i - p + a] += x[i] * W[a]: output o = 2m + r receives x[m + e] * W[a] for every
    tap a with a = r + p - 2e, i.e. e = (r + p - a) / 2 integer.

    Returns:
        For phase r in (0, 1): the (e, a) pairs sorted by input offset e (ascending, contiguous).
        E.g. k=4, p=1: phase 0 = [(-1, 3), (0, 1)], phase 1 = [(0, 2), (1, 0)].
    """
    output_padding(kernel_size, padding)
    taps = []
    for r in (0, 1):
        pairs = [
            ((r + padding - a) // 2, a) for a in range(kernel_size) if (r + padding - a) % 2 == 0
        ]
        taps.append(sorted(pairs))
    return taps


def _conv_valid(x: jax.Array, kernel: jax.Array, pads: Sequence[tuple[int, int]]) -> jax.Array:
    """Stride-1 cross-correlation with explicit (possibly negative = crop) padding."""
    return lax.conv_general_dilated(
        x, kernel, (1, 1), tuple(pads), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def upconv2x_phases(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
    """Sub-pixel stride-2 transposed conv: four small stride-1 convs, one per output phase.

    Phase (ry, rx) is a correlation of x with the taps that land on it (2x2 taps for k=4, so the
    four phases together do exactly the k*k multiply-adds per input pixel of the definition),
    then the phases are interleaved. Args/returns as `conv_transpose_reference`.
    """
    k = kernel.shape[0]
    taps = phase_taps(k, padding)
    rows = []
    for ry in (0, 1):
        cols = []
        for rx in (0, 1):
            ty, tx = taps[ry], taps[rx]
            ay = np.array([a for _, a in ty])
            ax = np.array([a for _, a in tx])
            sub = kernel[ay[:, None], ax[None, :]]  # [ny, nx, C_in, C_out], ordered by offset
            # out[m] = sum_e x[m + e] W[a_e]: pad so that window position j reads x[m + e_min + j].
            pads = ((-ty[0][0], ty[-1][0]), (-tx[0][0], tx[-1][0]))
            cols.append(_conv_valid(x, sub, pads))
        rows.append(jnp.stack(cols, axis=3))  # [N, H, W, 2(rx), C]
    y = jnp.stack(rows, axis=2)  # [N, H, 2(ry), W, 2(rx), C]
    n, h, _, w, _, c = y.shape
    return y.reshape(n, 2 * h, 2 * w, c)


def fused_phase_kernel(kernel: jax.Array, padding: int) -> tuple[jax.Array, tuple[int, int]]:
    """Packs all four phases into one stride-1 kernel [n, n, C_in, 4*C_out] (zeros where unused).

    Returns the kernel and the (lo, hi) padding of its window (the union of the phases' offsets).
    """
    k, _, cin, cout = kernel.shape
    taps = phase_taps(k, padding)
    e_lo = min(t[0][0] for t in taps)
    e_hi = max(t[-1][0] for t in taps)
    n = e_hi - e_lo + 1
    # Static one-hot selector S[j, r, a] = 1 if tap a lands on phase r at window position j, so
    # the fused kernel is a linear (differentiable) function of the PyTorch-layout kernel.
    sel = np.zeros((n, 2, k), np.float32)
    for r in (0, 1):
        for e, a in taps[r]:
            sel[e - e_lo, r, a] = 1.0
    sel = jnp.asarray(sel, kernel.dtype)
    fused = jnp.einsum("iya,jxb,abco->ijcyxo", sel, sel, kernel)
    return fused.reshape(n, n, cin, 4 * cout), (-e_lo, e_hi)


def upconv2x_fused(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
    """Sub-pixel stride-2 transposed conv as one stride-1 conv with 4*C_out outputs.

    For k=4 this is a 3x3 conv (2.25x the multiply-adds of the phase form, but one large
    matmul-shaped conv) followed by `depth_to_space`. Args/returns as `conv_transpose_reference`.
    """
    fused, (lo, hi) = fused_phase_kernel(kernel, padding)
    return depth_to_space(_conv_valid(x, fused, ((lo, hi), (lo, hi))), 2)


def upconv2x_gemm(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
    """Stride-2 transposed conv as one matrix product and shifted sums (scatter form).

    Every input pixel times all k*k taps at once (z: k*k*C_out channels per input pixel, the
    definition's exact multiply-adds), then output phase (ry, rx) at m sums
    z[m + ey, m + ex, tap (ay, ax)] over its taps (`phase_taps`, `shifted_tap_sums`). The
    gradient is matrix products and gathers again, no convolution: XLA:CPU computes the kernel
    gradient of the phases' convs at a few GMAC/s when C_in is large. Args/returns as
    `conv_transpose_reference`.
    """
    k, _, cin, cout = kernel.shape
    n, h, w, _ = x.shape
    z = _dot_last(x, kernel.transpose(2, 0, 1, 3).reshape(cin, k * k * cout))
    z = z.reshape(n, h, w, k, k, cout)
    y = shifted_tap_sums(z, _upconv2x_phases_of(k, padding), (h, w))  # [N, H, 2(ry), W, 2(rx), C]
    return y.reshape(n, 2 * h, 2 * w, cout)


Phases = tuple[tuple[tuple[tuple[int, int, int, int], ...], ...], ...]


def _upconv2x_phases_of(k: int, padding: int) -> Phases:
    """`upconv2x_gemm`'s terms (ay, ax, ey, ex): output phase (ry, rx) at (m, l) sums
    z[m + ey, l + ex, tap (ay, ax)]."""
    taps = phase_taps(k, padding)
    return tuple(
        tuple(
            tuple((ay, ax, ey, ex) for ey, ay in taps[ry] for ex, ax in taps[rx]) for rx in (0, 1)
        )
        for ry in (0, 1)
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def upconv2x_gemm_by_phase(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
    """`upconv2x_gemm` whose backward pass takes the output gradient one phase at a time.

    Output phase (ry, rx) receives the k/2 x k/2 taps in `phase_taps`, so its share of the
    scatter's gradient is dz_phase [N, H, W, taps, C] (shifted slices of that phase of dy):
    dx = sum over phases of dz_phase @ W_phase^T and each tap's kernel gradient is
    x^T dz_phase. The same sums as the one product over all k*k taps (in another order),
    with a quarter of the gradient stack live at a time: each phase's products are tied to
    the previous phase's (`remat.after`), so XLA cannot build the four stacks at once, and the
    input gradient to the kernel gradient, so no stack waits for the end of the step.
    """
    return upconv2x_gemm(x, kernel, padding)


def _upconv2x_gemm_by_phase_fwd(x, kernel, padding):
    return upconv2x_gemm(x, kernel, padding), (x, kernel)


def _upconv2x_gemm_by_phase_bwd(padding, res, dy):
    x, kernel = res
    k, _, cin, cout = kernel.shape
    n, h, w, _ = x.shape
    dy = dy.reshape(n, h, 2, w, 2, cout)
    x2 = x.reshape(-1, cin)
    dx = None
    dkernel = {}
    anchor = None
    for ry, row in enumerate(_upconv2x_phases_of(k, padding)):
        for rx, terms in enumerate(row):
            d = dy[:, :, ry, :, rx, :]
            if anchor is not None:  # this phase's stack only after the previous one's products
                d = remat.after(d, anchor)
            # dz[p, r, tap] = dy_phase[p - ey, r - ex]: pad once by the shifts, slice per tap.
            eys = [ey for _, _, ey, _ in terms]
            exs = [ex for _, _, _, ex in terms]
            lo_h, lo_w = max(max(eys), 0), max(max(exs), 0)
            hi_h, hi_w = max(-min(eys), 0), max(-min(exs), 0)
            dp = _pad_hw(d, (1, 2), ((lo_h, hi_h), (lo_w, hi_w)))
            dz = jnp.stack(
                [
                    dp[:, lo_h - ey : lo_h - ey + h, lo_w - ex : lo_w - ex + w]
                    for _, _, ey, ex in terms
                ],
                axis=-2,
            ).reshape(n * h * w, len(terms) * cout)
            w_phase = jnp.stack([kernel[ay, ax] for ay, ax, _, _ in terms], axis=1)
            # float32 sums across the phases, as inside the one product (bfloat16 runs).
            part = jnp.dot(dz, w_phase.reshape(cin, -1).T, preferred_element_type=jnp.float32)
            dx = part if dx is None else dx + part  # [NHW, C_in]
            dk = jnp.dot(x2.T, dz).reshape(cin, len(terms), cout)
            for t, (ay, ax, _, _) in enumerate(terms):
                dkernel[ay, ax] = dk[:, t]
            # One element of each product: the next phase waits for both. Not jnp.sum(dk):
            # XLA:CPU's legacy emitters turned that sum into a 32x32 reduce-window whose
            # LLVM compilation took ~3 s per phase at ngf=16 (BENCHMARKS.md, "Compile time").
            anchor = dx.reshape(-1)[0] + dk.reshape(-1)[0]
    zero = jnp.zeros((cin, cout), kernel.dtype)
    dkernel = jnp.stack(
        [jnp.stack([dkernel.get((a, b), zero) for b in range(k)]) for a in range(k)]
    )
    dx = dx.reshape(n, h, w, cin).astype(x.dtype)
    return _match_vma(dx, x), _match_vma(dkernel, kernel)


upconv2x_gemm_by_phase.defvjp(_upconv2x_gemm_by_phase_fwd, _upconv2x_gemm_by_phase_bwd)


def _pad_hw(x: jax.Array, hw_axes: tuple[int, int], pads: Sequence[tuple[int, int]]) -> jax.Array:
    """Zero-pads (negative: crops) axes hw_axes of x by pads[0] and pads[1] (lo, hi)."""
    cfg = [(0, 0, 0)] * x.ndim
    for axis, (lo, hi) in zip(hw_axes, pads, strict=True):
        cfg[axis] = (lo, hi, 0)
    return lax.pad(x, jnp.zeros((), x.dtype), cfg)


def shifted_tap_sums(z: jax.Array, phases: Phases, out_hw: tuple[int, int]) -> jax.Array:
    """y[..., m, qy, l, qx, c] = sum over the terms (a, b, oy, ox) of phase phases[qy][qx] of
    z[..., m + oy, l + ox, a, b, c] (zero where the shifted index falls outside z).

    The scatter half of a strided or transposed conv computed as one product with every tap in
    the channels (`upconv2x_gemm`: 2 x 2 phases, so y reshapes to the 2x upsampled map;
    `conv_taps`' 'output' form: one phase). Autodiff would build z's gradient as a sum of
    zero-padded z-sized copies, one per tap, which XLA:CPU fuses into one loop that evaluates
    every tap's pad, and the producers of the incoming gradient fused into them, at every
    element (G's RGB layer: 106 ms per step at ngf=16). The written-out gradient pads y's
    gradient once and stacks one slice of it per tap.

    Args:
        z: [..., Hz, Wz, A, B, C].
        phases: [Py][Px] nested tuples of (a, b, oy, ox) terms; each tap (a, b) in at most one.
        out_hw: (Ho, Wo).

    Returns:
        [..., Ho, Py, Wo, Px, C].
    """
    return _shifted_tap_sums(phases, tuple(out_hw), z.shape[-5:-1], z)


def _tap_sums_forward(phases: Phases, out_hw, z: jax.Array) -> jax.Array:
    hz, wz = z.shape[-5:-3]
    rows = []
    for row in phases:
        cols = []
        for terms in row:
            # out[m] = z[m + o]: pad by -o (crop) before and out - z + o after.
            parts = [
                _pad_hw(
                    z[..., a, b, :],
                    (-3, -2),
                    ((-oy, out_hw[0] - hz + oy), (-ox, out_hw[1] - wz + ox)),
                )
                for a, b, oy, ox in terms
            ]
            cols.append(functools.reduce(jnp.add, parts))
        rows.append(jnp.stack(cols, axis=-2))  # [..., Ho, Wo, Px, C]
    return jnp.stack(rows, axis=-4)  # [..., Ho, Py, Wo, Px, C]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _shifted_tap_sums(phases, out_hw, z_hwab, z):
    return _tap_sums_forward(phases, out_hw, z)


def _shifted_tap_sums_fwd(phases, out_hw, z_hwab, z):
    return _tap_sums_forward(phases, out_hw, z), None


def _shifted_tap_sums_bwd(phases, out_hw, z_hwab, _, dy):
    hz, wz, na, nb = z_hwab
    ho, wo = out_hw
    lead, c = dy.shape[:-5], dy.shape[-1]
    where = {
        (a, b): (qy, qx, oy, ox)
        for qy, row in enumerate(phases)
        for qx, terms in enumerate(row)
        for a, b, oy, ox in terms
    }
    # dz[..., p, r, a, b, :] = dy[..., p - oy, qy, r - ox, qx, :]: dy padded once by the
    # largest shifts, then every tap one slice of it.
    oys = [oy for _, _, oy, _ in where.values()] or [0]
    oxs = [ox for _, _, _, ox in where.values()] or [0]
    lo_h, lo_w = max(max(oys), 0), max(max(oxs), 0)
    hi_h, hi_w = max(hz - ho - min(oys), 0), max(wz - wo - min(oxs), 0)
    dyp = _pad_hw(dy, (-5, -3), ((lo_h, hi_h), (lo_w, hi_w)))
    zero = jnp.zeros((*lead, hz, wz, c), dy.dtype)
    rows = []
    for a in range(na):
        cols = []
        for b in range(nb):
            if (a, b) not in where:
                cols.append(zero)
                continue
            qy, qx, oy, ox = where[a, b]
            cols.append(dyp[..., lo_h - oy : lo_h - oy + hz, qy, lo_w - ox : lo_w - ox + wz, qx, :])
        rows.append(jnp.stack(cols, axis=-2))  # [..., Hz, Wz, B, C]
    return (jnp.stack(rows, axis=-3),)  # [..., Hz, Wz, A, B, C]


_shifted_tap_sums.defvjp(_shifted_tap_sums_fwd, _shifted_tap_sums_bwd)


UPCONV_IMPLS = {
    "gemm": upconv2x_gemm_by_phase,
    "phases": upconv2x_phases,
    "fused": upconv2x_fused,
    "reference": conv_transpose_reference,
}


def choose_upconv_impl(in_shape: Sequence[int], features: int) -> str:
    """`UpConv2x`'s impl for 'auto', from the input [N, H, W, C_in] (per device) and C_out.

    'gemm' at every layer vice-gan runs: with `shifted_tap_sums`' gradient it was faster than
    'phases' on all 20 layers of `experiments/bench_upconv.py` (2-core XLA:CPU, AVX2, forward
    + backward ms, phases / gemm): G at ngf=16, 128 frames, 43 / 22 (4x4x128 -> 64) to 165 /
    36 (32x32x16 -> RGB); ngf=32, 256 frames, 16x16x64 -> 32 1665 / 363; ngf=64, 512 frames,
    16x16x128 -> 64 12908 / 1964; the large AE's decoder, 32 frames, 8x8x128 -> 64 34 / 12.
    The phases' kernel gradients are convolutions with a whole-map window, which XLA:CPU runs
    at a small fraction of its matrix products' speed. The arguments are kept so that a
    backend where another form wins can choose by shape.
    """
    del in_shape, features
    return "gemm"


class UpConv2x(nn.Module):
    """PyTorch `ConvTranspose2d(C_in, features, k, stride=2, padding, output_padding, bias=False)`.

    output_padding = 2 + 2*padding - kernel_size, so the output is exactly 2H x 2W; valid
    (kernel_size, padding) pairs are (2, 0), (3, 1), (4, 1). The 'kernel' parameter is
    [k, k, C_in, features] in PyTorch scatter convention (module docstring), so PyTorch weights
    port by a transpose only.

    Attributes:
        features: output channels.
        kernel_size: k.
        padding: PyTorch `padding` p.
        impl: 'phases' (four stride-1 convs + interleave), 'gemm' (one matrix product +
            shifted sums, `upconv2x_gemm`), 'fused' (one stride-1 conv with 4*features
            outputs + depth_to_space), 'reference' (lhs-dilated conv = what nn.ConvTranspose
            runs), or 'auto' (`choose_upconv_impl`: 'gemm'). All are numerically equal.
            `experiments/bench_upconv.py` times them on every layer of G and the AEs; on
            GPU 'reference' may be the one to use.
        kernel_init: initialiser of the [k, k, C_in, features] kernel (DCGAN N(0, 0.02)).
        dtype: computation dtype (parameters stay float32).
    """

    features: int
    kernel_size: int = 4
    padding: int = 1
    impl: str = "auto"
    kernel_init: Initializer = dcgan_kernel_init
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Upsamples [N, H, W, C_in] -> [N, 2H, 2W, features]."""
        impl = self.impl
        if impl == "auto":
            impl = choose_upconv_impl(x.shape, self.features)
        if impl not in UPCONV_IMPLS:
            raise ValueError(
                f"UpConv2x impl must be 'auto' or one of {sorted(UPCONV_IMPLS)}, got {self.impl!r}"
            )
        output_padding(self.kernel_size, self.padding)
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        return UPCONV_IMPLS[impl](x, kernel, self.padding)


class Project1x1To4x4(nn.Module):
    """PyTorch `ConvTranspose2d(C_in, features, 4, stride=1, padding=0, bias=False)` on a 1x1 map.

    On a 1x1 input that layer is out[n, a, b, f] = sum_c z[n, c] W[a, b, c, f]: one matrix product
    (a Dense without bias) reshaped to 4x4, which avoids a convolution over a padded 1x1 map.

    Attributes:
        features: output channels.
        kernel_init: initialiser of the [4, 4, C_in, features] kernel (PyTorch scatter layout).
        dtype: computation dtype (parameters stay float32).
    """

    features: int
    kernel_init: Initializer = dcgan_kernel_init
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        """Maps codes [N, C_in] (or a 1x1 map [N, 1, 1, C_in]) to [N, 4, 4, features]."""
        z = z.reshape(z.shape[0], -1)
        cin = z.shape[-1]
        # Kept in conv layout [4, 4, C_in, F] so it ports from/to PyTorch like the other layers.
        kernel = self.param("kernel", self.kernel_init, (4, 4, cin, self.features))
        z, kernel = nn.dtypes.promote_dtype(z, kernel, dtype=self.dtype)
        w = kernel.transpose(2, 0, 1, 3).reshape(cin, 16 * self.features)
        return jnp.dot(z, w).reshape(z.shape[0], 4, 4, self.features)


def batch_norm(
    train: bool,
    axis_name: str | None,
    dtype: Dtype,
    scale_init: Initializer = nn.initializers.ones,
    name: str | None = None,
) -> nn.BatchNorm:
    """BatchNorm with PyTorch defaults (momentum 0.9 = PyTorch 0.1, eps 1e-5).

    `axis_name` makes the batch statistics a mean over the devices' shards of the global batch.
    The variance is computed in two passes, E[(x - E[x])^2], as PyTorch does: Flax's default
    E[x^2] - E[x]^2 cancels catastrophically when mean^2 >> variance, which made 1- and 2-device
    gradients differ by ~3 % (tests/test_steps.py, 1-vs-2-device parity).
    Note: like all of Flax, running variance uses the biased batch variance (PyTorch: unbiased).
    """
    return nn.BatchNorm(
        use_running_average=not train,
        use_fast_variance=False,
        momentum=0.9,
        epsilon=1e-5,
        axis_name=axis_name,
        dtype=dtype,
        scale_init=scale_init,
        name=name,
    )


# --- Strided convolutions as matrix products -------------------------------------------------
#
# XLA:CPU runs the backward pass of strided convolutions very slowly: the input gradient of a
# stride-2 conv is a conv of a zero-dilated gradient, and 3-D convs have no fast kernel at all
# (D_V, ndf=16, 8 clips: 5.4 s for forward + backward, the input gradient of its first layer
# alone 6 s). Its matrix products are fast (YNNPACK, ~100 GMAC/s on 2 cores); slices, pads,
# stacks and transposes fused into loops are not free (a few ns per element), so the forms
# below trade extra multiply-adds against fewer or smaller rearranged copies. Every conv here
# is one or a few matrix products plus such loops (`conv_taps`), and so is its gradient.
# The 'kernel' parameter keeps nn.Conv's layout [(kt,) k, k, C_in, C_out], so parameter trees,
# counts and initialisation are those of nn.Conv.


def space_to_depth(x: jax.Array, block: int) -> jax.Array:
    """Moves space into channels: [..., b*H, b*W, C] -> [..., H, W, b*b*C].

    Output channel (ry*b + rx)*C + c is input pixel (b*h + ry, b*w + rx), channel c: the inverse
    of `depth_to_space` (DCR order).
    """
    if block == 1:
        return x
    *lead, h, w, c = x.shape
    x = x.reshape(*lead, h // block, block, w // block, block, c)
    nd = len(lead)
    x = jnp.swapaxes(x, nd + 1, nd + 2)  # [..., H, W, ry, rx, C]
    return x.reshape(*lead, h // block, w // block, block * block * c)


def conv_output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """Output length of a conv with symmetric zero padding (PyTorch's / nn.Conv's formula).

    Raises:
        ValueError: if the padded input is shorter than the kernel.
    """
    out = (size + 2 * padding - kernel_size) // stride + 1
    if out < 1:
        raise ValueError(
            f"conv with kernel {kernel_size}, stride {stride}, padding {padding} does not fit an "
            f"input of size {size}"
        )
    return out


def block_kernel(kernel: jax.Array, stride: int) -> jax.Array:
    """Rearranges a stride-s kernel for the space-to-depth input.

    [..., k, k, C, O] -> [..., n, n, s*s*C, O] with n = ceil(k / s): block tap (i, j), channel
    (ry*s + rx)*C + c holds kernel tap (s*i + ry, s*j + rx), channel c, and zero where that tap
    is beyond k (e.g. k=3, s=2: the 4th tap). Linear in `kernel`, so gradients reach it.
    """
    *lead, k, _, c, o = kernel.shape
    n = -(-k // stride)
    if n * stride != k:
        pad = [(0, 0)] * len(lead) + [(0, n * stride - k)] * 2 + [(0, 0)] * 2
        kernel = jnp.pad(kernel, pad)
    nd = len(lead)
    kernel = kernel.reshape(*lead, n, stride, n, stride, c, o)
    kernel = jnp.swapaxes(kernel, nd + 1, nd + 2)  # [..., n, n, ry, rx, C, O]
    return kernel.reshape(*lead, n, n, stride * stride * c, o)


def _pad_spatial(x: jax.Array, lo: int, hi_h: int, hi_w: int) -> jax.Array:
    """Zero-pads (negative: crops) the H and W axes of [..., H, W, C]."""
    return _pad_hw(x, (-3, -2), ((lo, hi_h), (lo, hi_w)))


def im2col(xp: jax.Array, k: int, stride: int, out_hw: tuple[int, int]) -> jax.Array:
    """The k x k windows of a padded input as channels: [..., Hp, Wp, C] -> [..., Ho, Wo, k*k*C].

    Channel (a*k + b)*C + c of output pixel (h, w) is xp[..., s*h + a, s*w + b, c], so the
    products with kernel.reshape(k*k*C, O) are the conv. With stride s > 1 (and k >= s) the
    gradient is written out by phases (`_strided_im2col`).
    """
    *lead, hp, wp, c = xp.shape
    ho, wo = out_hw
    if (ho, wo) == (1, 1) and (hp, wp) == (k, k):  # one window, the whole map: a flatten
        return xp.reshape(*lead, 1, 1, k * k * c)
    if 1 < stride <= k:
        return _strided_im2col(k, stride, (ho, wo), (hp, wp), xp)
    return _im2col_slices(xp, k, stride, (ho, wo))


def _im2col_slices(xp: jax.Array, k: int, stride: int, out_hw: tuple[int, int]) -> jax.Array:
    *lead, _, _, c = xp.shape
    ho, wo = out_hw
    taps = []
    for a in range(k):
        for b in range(k):
            start = (0,) * len(lead) + (a, b, 0)
            limit = (*lead, a + stride * (ho - 1) + 1, b + stride * (wo - 1) + 1, c)
            taps.append(lax.slice(xp, start, limit, (1,) * len(lead) + (stride, stride, 1)))
    return _gather_channels(taps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _strided_im2col(k, stride, out_hw, in_hw, xp):
    return _im2col_slices(xp, k, stride, out_hw)


def _strided_im2col_fwd(k, stride, out_hw, in_hw, xp):
    return _im2col_slices(xp, k, stride, out_hw), None


def _strided_im2col_bwd(k, stride, out_hw, in_hw, _, dcols):
    """Input pixel (s*m + qy, s*l + qx) receives tap (a, b) of output pixel (m - a // s,
    l - b // s) for every a = qy, b = qx (mod s): per phase (qy, qx) a sum of shifted slices,
    `shifted_tap_sums`. Autodiff would sum k*k zero-interleaved pads of the taps instead, one
    fused loop that evaluates all k*k of them at every input pixel (the large encoder's
    second layer at 128 frames: ~20 ms, `experiments/profile_step.py`)."""
    *lead, ho, wo, kkc = dcols.shape
    hp, wp = in_hw
    z = dcols.reshape(*lead, ho, wo, k, k, kkc // (k * k))
    phases = tuple(
        tuple(
            tuple(
                (a, b, -(a // stride), -(b // stride))
                for a in range(qy, k, stride)
                for b in range(qx, k, stride)
            )
            for qx in range(stride)
        )
        for qy in range(stride)
    )
    hq, wq = -(-hp // stride), -(-wp // stride)
    y = shifted_tap_sums(z, phases, (hq, wq))  # [..., hq, s, wq, s, C]
    y = y.reshape(*lead, hq * stride, wq * stride, y.shape[-1])
    return (y[..., :hp, :wp, :],)


_strided_im2col.defvjp(_strided_im2col_fwd, _strided_im2col_bwd)


def _dot_last(x: jax.Array, w: jax.Array) -> jax.Array:
    """[..., K] @ [K, M] -> [..., M] as one 2-D matrix product."""
    lead = x.shape[:-1]
    return jnp.dot(x.reshape(-1, x.shape[-1]), w).reshape(*lead, w.shape[-1])


def _time_taps(x: jax.Array, w: jax.Array) -> jax.Array:
    """sum_dt x[dt : dt + T'] @ w[dt]: x [T, ..., K], w [kt, K, M] -> [T - kt + 1, ..., M].

    Time-major, so each temporal tap is a contiguous slice.
    """
    kt = w.shape[0]
    tp = x.shape[0] - kt + 1
    y = None
    for dt in range(kt):
        part = _dot_last(x[dt : dt + tp], w[dt])
        y = part if y is None else y + part
    return y


def choose_taps(k: int, stride: int, cin: int, cout: int, out_hw: tuple[int, int]) -> str:
    """`conv_taps`' form for taps='auto' (C_in counts stacked temporal taps).

    Rules measured on XLA:CPU (2 cores, AVX-512), where the products are fast and the copies
    that build their operands are what costs: a whole-map window is a free reshape ('input');
    a kernel that the stride does not divide (K3 S2) would waste 7/16 of 'block'/'output''s
    products on zero taps, so 'input' (9 exact taps); otherwise 'block' when its operand is
    the smaller intermediate (s*s*C_in < C_out: first layers, RGB in) or when 'output' would
    waste much on border blocks ((Ho + 1)^2 / Ho^2 = 1.56 for a 4x4 output: D_V's last K4 S2
    layer, ndf=64, 32 clips, forward + backward 0.88 vs 1.06 s), else 'output'.
    """
    n = -(-k // stride)
    if out_hw == (1, 1) or k % stride:
        return "input"
    if n > 1 and (stride * stride * cin < cout or max(out_hw) <= 4):
        return "block"
    return "output"


def _gather_channels(parts: list[jax.Array]) -> jax.Array:
    """[..., C] x n -> [..., n*C], part i in channels [i*C, (i+1)*C).

    A stack on a new axis then a reshape: in isolation its gradient ran 4-7x faster on
    XLA:CPU than summing zero-padded parts (a fused loop of pads), and no slower forward.
    """
    stacked = jnp.stack(parts, axis=-2)
    return stacked.reshape(*stacked.shape[:-2], -1)


def _stack_time(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Temporal taps into channels: [T, ...,  C] -> [T - kt + 1, ..., kt*C] (channel dt*C + c
    is frame t + dt), and the kernel [kt, k, k, C, O] -> [1, k, k, kt*C, O] to match."""
    kt, k, _, c, o = kernel.shape
    tp = x.shape[0] - kt + 1
    stacked = _gather_channels([x[dt : dt + tp] for dt in range(kt)])
    return stacked, jnp.moveaxis(kernel, 0, 2).reshape(1, k, k, kt * c, o)


_FORWARDS = ("products", "lax", "block")


def conv_taps(
    x: jax.Array,
    kernel: jax.Array,
    stride: int,
    padding: int,
    taps: str = "auto",
    time_taps: str = "stack",
    forward: str = "products",
    by_frame: bool = False,
) -> jax.Array:
    """Conv, VALID with stride 1 in time and stride/padding in space, as products and loops.

    Temporal taps ('time_taps'): 'stack' moves the kt frames of each window into channels
    first (one product with kt*C_in inputs), 'sum' adds one product per tap.
    Spatial taps ('taps'), three exact forms:
      'input': im2col of the padded input (k*k*C_in channels per output pixel), then one
        product with the kernel as a [k*k*C_in, C_out] matrix: exact multiply-adds.
      'block': space-to-depth by s (a reshape and transpose), which leaves a stride-1 conv with
        an n x n block kernel (n = ceil(k / s), `block_kernel`); im2col of its n*n block taps
        (n*n*s*s*C_in channels), one product. Fewer, wider taps than 'input'.
      'output': space-to-depth as 'block'; every input block times all n*n block taps in one
        product (n*n*C_out channels per block), then the n*n shifted slices summed. No im2col.
    'block' and 'output' multiply zero taps when s does not divide k, and 'output' computes
    border blocks no output uses. 'auto' picks by `choose_taps`.

    Gradients: products, pads and sums again, but the product operand (the im2col / stacked /
    space-to-depth input, up to 16x the input's size) is rebuilt in the backward pass from
    the saved input instead of being kept from the forward pass: D_V at ndf=64, 32 clips, holds
    ~1.5 GB less at its peak, at no measurable cost in time.

    Args:
        x: [T, N, H, W, C_in], time-major (T = 1 for images).
        kernel: [kt, k, k, C_in, C_out] (nn.Conv's DHWIO layout).
        stride, padding: spatial, per axis (symmetric zero padding).
        taps: 'input' | 'block' | 'output' | 'auto'.
        time_taps: 'stack' | 'sum'.
        forward: 'products' (the above), 'lax' (the forward pass by XLA's 2-D
            convolutions, `conv_slices`, which XLA:CPU runs well on small maps; the gradient
            by products) or 'block' (the forward pass by products in 'block' form, the
            gradient in `taps`' form: on RGB input the forward's operand is then 12 channels
            wide, while 'input' keeps the gradient to the exact 9 taps).
        by_frame: in the 'output' form (ignored in the others), its shifted sums and the
            whole backward pass one output frame at a time (loops over T'), so that neither
            the n*n-tap product nor the backward's operands and output-gradient tap stack (D_V's
            first layer at ndf=32, 16 clips: 116 + 43 MB, the peak of its update) are live for
            all frames at once. As a loop's output, the sums are also kept themselves: XLA:CPU
            recomputed them from the n*n-tap product inside their consumers (the next layer's
            operands, the activation's gradient), which kept that product, n*n times the
            output's size, alive from the forward pass to the backward pass. The same sums;
            the kernel's gradient summed over frames in another order.

    Returns:
        [T - kt + 1, N, Ho, Wo, C_out], Ho = (H + 2p - k) // s + 1.
    """
    if forward not in _FORWARDS:
        raise ValueError(f"forward must be one of {_FORWARDS}, got {forward!r}")
    if (
        by_frame
        and _resolve_taps(x.shape, kernel.shape, stride, padding, taps, time_taps) != "output"
    ):
        by_frame = False  # the other forms' products write the output itself
    return _conv_taps_remat(stride, padding, taps, time_taps, forward, by_frame, x, kernel)


def conv_slices(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """The same conv as `conv_taps` by XLA's own 2-D convolutions, one per temporal tap.

    y[t] = sum_dt conv2d(x[t + dt], kernel[dt]): frames and clips fold into the 2-D batch (a
    free reshape, time-major). When kt * C_in <= 16 (D_V's RGB input) the kt frames are first
    stacked into channels and one conv runs instead: a 3-channel conv leaves XLA's kernels
    mostly idle. Autodiff gives the gradients (lax's conv transposes).

    Args/returns as `conv_taps`.
    """
    if kernel.shape[0] > 1 and kernel.shape[0] * kernel.shape[3] <= 16:
        x, kernel = _stack_time(x, kernel)
    kt = kernel.shape[0]
    tp = x.shape[0] - kt + 1
    pad = ((padding, padding),) * 2
    y = None
    for dt in range(kt):
        xs = x[dt : dt + tp]
        part = conv_reference(xs.reshape(-1, *xs.shape[2:]), kernel[dt], (stride, stride), pad)
        y = part if y is None else y + part
    return y.reshape(tp, x.shape[1], *y.shape[1:])


def _conv_taps_forward(x, kernel, stride, padding, taps, time_taps, forward, by_frame):
    if forward == "lax":
        return conv_slices(x, kernel, stride, padding)
    if forward == "block":
        taps = "block"
    return _conv_taps(x, kernel, stride, padding, taps, time_taps, by_frame)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3, 4, 5))
def _conv_taps_remat(stride, padding, taps, time_taps, forward, by_frame, x, kernel):
    return _conv_taps_forward(x, kernel, stride, padding, taps, time_taps, forward, by_frame)


def _conv_taps_remat_fwd(stride, padding, taps, time_taps, forward, by_frame, x, kernel):
    y = _conv_taps_forward(x, kernel, stride, padding, taps, time_taps, forward, by_frame)
    return y, (x, kernel)


def _conv_taps_remat_bwd(stride, padding, taps, time_taps, forward, by_frame, res, dy):
    x, kernel = res
    # A function of the incoming gradient (same values), so XLA can neither merge the rebuilt
    # operand with the forward's nor build it before the gradient arrives.
    x = remat.after(x, dy.reshape(-1)[0])

    def grads(x, dy):
        _, vjp = jax.vjp(lambda x, k: _conv_taps(x, k, stride, padding, taps, time_taps), x, kernel)
        return vjp(dy)

    dx, dkernel = _grads_by_frame(grads, x, dy) if by_frame else grads(x, dy)
    return _match_vma(dx, res[0]), _match_vma(dkernel, kernel)


def _grads_by_frame(grads: Callable, x: jax.Array, dy: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`grads`(x, dy) -> (dx, dkernel) of a conv VALID in time, one output frame t per loop
    iteration: grads(x[t : t + kt], dy[t : t + 1]), its dx added into frames t .. t + kt - 1
    (summed in float32, as the kernel's gradient)."""
    tp = dy.shape[0]
    kt = x.shape[0] - tp + 1

    def frame(t):
        window = lax.dynamic_slice_in_dim(x, t, kt)
        return grads(window, lax.dynamic_slice_in_dim(dy, t, 1))

    def add_frame(t, acc):
        dx, dk = acc
        dxt, dkt = frame(t)
        dx_window = lax.dynamic_slice_in_dim(dx, t, kt) + dxt.astype(jnp.float32)
        return lax.dynamic_update_slice_in_dim(dx, dx_window, t, 0), dk + dkt.astype(jnp.float32)

    # The first frame outside the loop: the accumulators start with its gradients' types
    # (under shard_map, varying along the batch axes as they are).
    dx0, dk0 = frame(0)
    dx = jnp.zeros(x.shape, jnp.float32)
    dx = lax.dynamic_update_slice_in_dim(dx, dx0.astype(jnp.float32), 0, 0)
    dx, dk = lax.fori_loop(1, tp, add_frame, (dx, dk0.astype(jnp.float32)))
    return dx.astype(x.dtype), dk.astype(dk0.dtype)


def _match_vma(grad: jax.Array, primal: jax.Array) -> jax.Array:
    """Sums a cotangent over the shard_map axes its primal is invariant along (the transpose of
    the implicit broadcast), as JAX's own autodiff does; outside shard_map a no-op."""

    def varying(x):
        return jax.typeof(x).manual_axis_type.varying

    extra = tuple(sorted(varying(grad) - varying(primal)))
    return lax.psum(grad, extra) if extra else grad


_conv_taps_remat.defvjp(_conv_taps_remat_fwd, _conv_taps_remat_bwd)


def _resolve_taps(x_shape, kernel_shape, stride: int, padding: int, taps: str, time_taps: str):
    """The form `_conv_taps` runs: `taps`, or `choose_taps`' pick for 'auto'."""
    if taps != "auto":
        return taps
    kt, k, _, cin, cout = kernel_shape
    stacked_cin = kt * cin if time_taps == "stack" and kt > 1 else cin
    out_hw = tuple(conv_output_size(d, k, stride, padding) for d in x_shape[-3:-1])
    return choose_taps(k, stride, stacked_cin, cout, out_hw)


def _conv_taps(
    x: jax.Array,
    kernel: jax.Array,
    stride: int,
    padding: int,
    taps: str = "auto",
    time_taps: str = "stack",
    by_frame: bool = False,
) -> jax.Array:
    """`conv_taps` without the custom gradient (autodiff keeps the operand); `by_frame`: the
    'output' form's shifted sums one output frame at a time (`_block_tap_sums`)."""
    if time_taps not in ("stack", "sum"):
        raise ValueError(f"time_taps must be 'stack' or 'sum', got {time_taps!r}")
    stack = time_taps == "stack" and kernel.shape[0] > 1
    kt, k, _, cin, cout = kernel.shape
    *_, h, w, _ = x.shape
    ho = conv_output_size(h, k, stride, padding)
    wo = conv_output_size(w, k, stride, padding)
    taps = _resolve_taps(x.shape, kernel.shape, stride, padding, taps, time_taps)
    if taps == "input":
        if stack:
            x, kernel = _stack_time(x, kernel)
            kt, cin = 1, kt * cin
        xp = _pad_spatial(x, padding, padding, padding)
        cols = im2col(xp, k, stride, (ho, wo))
        return _time_taps(cols, kernel.reshape(kt, k * k * cin, cout))
    if taps not in ("output", "block"):
        raise ValueError(f"taps must be 'input', 'block', 'output' or 'auto', got {taps!r}")
    n = -(-k // stride)
    # Pad (or crop rows no window reads) to s * (out + n - 1): whole blocks, every window inside.
    hi_h = stride * (ho + n - 1) - h - padding
    hi_w = stride * (wo + n - 1) - w - padding
    xs = space_to_depth(_pad_spatial(x, padding, hi_h, hi_w), stride)
    wb = block_kernel(kernel, stride)  # [kt, n, n, s*s*C_in, C_out]
    if stack:
        # Frames stacked after space-to-depth: the copy moves runs of s*s*C_in values, not C_in
        # (RGB: 12 instead of 3), and space-to-depth runs once per frame, not per tap.
        xs, wb = _stack_time(xs, wb)
        kt, cin = 1, kt * cin
    if taps == "block":
        cols = im2col(xs, n, 1, (ho, wo))
        return _time_taps(cols, wb.reshape(kt, n * n * stride * stride * cin, cout))
    z = _time_taps(xs, jnp.moveaxis(wb, 3, 1).reshape(kt, -1, n * n * cout))
    if n == 1:
        return z
    z = z.reshape(*z.shape[:-1], n, n, cout)
    if by_frame:
        return _block_tap_sums(z, (ho, wo))
    terms = tuple((i, j, i, j) for i in range(n) for j in range(n))
    y = shifted_tap_sums(z, ((terms,),), (ho, wo))  # [T', N, Ho, 1, Wo, 1, C_out]
    return y.reshape(*y.shape[:-5], ho, wo, cout)


def _block_tap_sums(z: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """y[t, ..., m, l, :] = sum over block taps (i, j) of z[t, ..., m + i, l + j, i, j, :], one
    index t of the leading axis per loop iteration."""
    n = z.shape[-3]
    ho, wo = out_hw

    def frame(t, y):
        zt = lax.dynamic_index_in_dim(z, t, axis=0)
        yt = sum(zt[..., i : i + ho, j : j + wo, i, j, :] for i in range(n) for j in range(n))
        return lax.dynamic_update_index_in_dim(y, yt, t, axis=0)

    y = jnp.zeros_like(z[..., :ho, :wo, 0, 0, :])  # (shard-varying as z is, in shard_map)
    return lax.fori_loop(0, z.shape[0], frame, y)


def strided_conv(
    x: jax.Array,
    kernel: jax.Array,
    stride: int,
    padding: int,
    taps: str = "auto",
    forward: str = "products",
) -> jax.Array:
    """2-D conv (cross-correlation, as nn.Conv / PyTorch Conv2d) by `conv_taps`.

    Args:
        x: [N, H, W, C_in].
        kernel: [k, k, C_in, C_out] (HWIO).
        stride, padding: per spatial axis; symmetric zero padding.
        taps, forward: see `conv_taps`.

    Returns:
        [N, Ho, Wo, C_out], Ho = (H + 2p - k) // s + 1.
    """
    return conv_taps(x[None], kernel[None], stride, padding, taps, forward=forward)[0]


def conv_reference(x: jax.Array, kernel: jax.Array, strides, padding) -> jax.Array:
    """lax.conv_general_dilated on [N, (T,) H, W, C]: nn.Conv's computation, the definition.

    Args:
        strides, padding: per (temporal and) spatial axis: ints and (lo, hi) pairs.
    """
    spec = ("NHWC", "HWIO", "NHWC") if kernel.ndim == 4 else ("NDHWC", "DHWIO", "NDHWC")
    return lax.conv_general_dilated(
        x, kernel, tuple(strides), tuple(padding), dimension_numbers=spec
    )


_CONV_IMPLS = ("auto", "gemm", "mixed", "block", "native")


def choose_conv_impl(out_hw: tuple[int, int], in_channels: int) -> str:
    """`StridedConv`'s impl for 'auto': 'gemm' for outputs of at most 2x2 pixels, 'block' on
    RGB input (C_in <= 4), else 'mixed'.

    On the last layer of the large encoder (4x4x256 -> 2x2x512) XLA's convolution (forward)
    leaves the cores idle while im2col + one product does not (2-core XLA:CPU, AVX2, 128
    frames: about 2x faster); from 8x8 outputs on, 'mixed' is as fast or faster. Their
    gradients are the same products either way. On the encoder's first layer (64x64x3 ->
    32x32x32, K3 S2) XLA's convolution of 3 channels ran at 10-16 GFLOP/s in the GAN step
    (2-core XLA:CPU, AVX-512, 2 x 128 frames); with 'block' there the encoder's operations
    took 158 instead of 184 ms per step (BENCHMARKS.md, "The encoder's RGB layer").
    """
    if out_hw[0] * out_hw[1] <= 4:
        return "gemm"
    return "block" if in_channels <= 4 else "mixed"


class StridedConv(nn.Module):
    """nn.Conv(features, (k, k), strides=s, padding=p, use_bias=False), fast on XLA:CPU.

    Same parameter ('kernel' [k, k, C_in, features], HWIO) and same outputs and gradients as
    nn.Conv. `impl`:
      'mixed': forward pass by lax.conv_general_dilated (nn.Conv's), gradients by `conv_taps`'
        products. Large AE encoder, 128 frames (2-core XLA:CPU, CPU ms): forward 72 (= native),
        forward + backward 226 (native 836, gemm 233).
      'gemm': forward and gradients by `strided_conv` (forward 92 ms there).
      'block': forward by `strided_conv`'s products in 'block' form (space-to-depth: RGB
        becomes 12 channels, 16 taps of which 7 are zero for K3 S2), gradients by `taps`.
      'native': lax.conv_general_dilated throughout, i.e. nn.Conv. XLA:CPU runs it well for
        D_I's K4 S2 layers (forward + backward 3.5 ms for 8 images at ndf=16, 130 ms for 32 at
        ndf=64, vs gemm 4.7 / 146), badly for the encoder's K3 S2 ones (above).

    Attributes:
        features: output channels.
        kernel_size: k.
        stride: s.
        padding: p, symmetric zero padding.
        impl: 'mixed' | 'gemm' | 'block' | 'native' | 'auto' (per layer, `choose_conv_impl`).
        taps: `conv_taps`' 'input' | 'block' | 'output' | 'auto' (the gradients' form; with
            'gemm' also the forward's).
        kernel_init: initialiser of the kernel.
        dtype: computation dtype (parameters stay float32).
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    impl: str = "auto"
    taps: str = "auto"
    kernel_init: Initializer = dcgan_kernel_init
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[N, H, W, C_in] -> [N, Ho, Wo, features], Ho = (H + 2p - k) // s + 1."""
        if self.impl not in _CONV_IMPLS:
            raise ValueError(f"impl must be one of {_CONV_IMPLS}, got {self.impl!r}")
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        impl = self.impl
        if impl == "auto":
            ho = conv_output_size(x.shape[1], k, self.stride, self.padding)
            wo = conv_output_size(x.shape[2], k, self.stride, self.padding)
            impl = choose_conv_impl((ho, wo), x.shape[-1])
        if impl == "native":
            pad = ((self.padding, self.padding),) * 2
            return conv_reference(x, kernel, (self.stride,) * 2, pad)
        forward = {"mixed": "lax", "block": "block"}.get(impl, "products")
        return strided_conv(x, kernel, self.stride, self.padding, self.taps, forward)


_VIDEO_IMPLS = ("auto", "gemm", "mixed", "slices", "native", "winograd", "winograd_mixed")


def choose_video_impl(out_shape: Sequence[int], kernel_time: int, in_channels: int) -> str:
    """`VideoConv`'s impl for 'auto', from the output [T', B, Ho, Wo, C_out] (per device).

    'winograd' wherever time has taps to share (kt > 1 and T' > 1) on a feature map (C_in > 4:
    D_V's layers 2 to 4) with at least 2**16 output values (its 7 products per layer and
    their transforms only pay on real sizes; tiny test networks keep fewer operations to
    compile):
    D_V forward + backward (`experiments/benchmark.py --parts nets --nets D_V --dvid_impl`),
    2-core XLA:CPU (AVX2), 'auto' against 'gemm' in one sitting: ndf=16, 8 clips 291 vs
    323 ms; ndf=64, 32 clips 4404 vs 8068 ms (BENCHMARKS.md).
    Its transforms and strided frame slices cost more than they save on RGB input (D_V's
    first layer, whose kt frames 'mixed' stacks into 12 channels for one 2-D conv: D_V
    forward + backward at ndf=16 with it in Winograd form spent ~60 ms more there).
    Otherwise (also the head: one output frame) 'mixed' up to 2**21 output values, else 'gemm':
    XLA's 2-D convolutions run small forward passes faster than the products, large ones
    slower; their gradients are slower throughout.
    """
    size = math.prod(out_shape)
    if kernel_time > 1 and out_shape[0] > 1 and in_channels > 4 and size >= 2**16:
        return "winograd"
    return "mixed" if size <= 2**21 else "gemm"


def choose_winograd_loop(out_shape: Sequence[int]) -> bool:
    """Whether a Winograd layer with output [T', B, Ho, Wo, C_out] runs its products as one
    loop (`winograd.conv_time_winograd`'s `loop`): below 2**20 output values, where compile
    time is a large share of a run. Whole step, 2-core XLA:CPU (BENCHMARKS.md): ndf=16 (all
    three layers below) compiled in 25.5-29.7 s instead of 35.4-37.7 s at the same step time;
    at ndf=64 (all at or above) the loop took 3684 instead of 2839 MiB of XLA scratch.
    """
    return math.prod(out_shape) < 2**20


class VideoConv(nn.Module):
    """nn.Conv(features, (kt, k, k), strides=(1, s, s), padding=((0, 0), (p, p), (p, p)),
    use_bias=False) on *time-major* clips, computed as products (see `StridedConv`).

    Attributes:
        features: output channels.
        kernel_time: kt (VALID, stride 1 in time).
        kernel_size: k (space).
        stride: s (space).
        padding: p (space).
        impl: 'gemm' (`conv_taps`, forward and gradients; in its 'output' form one output
            frame at a time, `by_frame`), 'mixed' (forward by XLA's 2-D convs, `conv_slices`;
            gradients by `conv_taps`, also `by_frame`), 'slices' (`conv_slices` and
            its autodiff gradients), 'native' (XLA's 3-D conv, whose gradients are ~50x
            slower: D_V, ndf=16, 8 clips, forward + backward 5.4 s vs 0.23 s), 'winograd'
            (Winograd F(winograd_tile, kt) along time, `winograd.conv_time_winograd`, each
            of its spatial convs by `conv_taps`; 'winograd_mixed': those by 'mixed'), or
            'auto' (per layer by `choose_video_impl`). All are numerically equal.
        taps, kernel_init, dtype: as `StridedConv`.
        winograd_tile: output frames per Winograd tile (F(m, kt); 4: 7 products per 4
            frames instead of 16).
    """

    features: int
    kernel_time: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    impl: str = "auto"
    taps: str = "auto"
    winograd_tile: int = 4
    kernel_init: Initializer = dcgan_kernel_init
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[T, B, H, W, C_in] -> [T - kt + 1, B, Ho, Wo, features] (time-major)."""
        if self.impl not in _VIDEO_IMPLS:
            raise ValueError(f"impl must be one of {_VIDEO_IMPLS}, got {self.impl!r}")
        k, kt, s, p = self.kernel_size, self.kernel_time, self.stride, self.padding
        shape = (kt, k, k, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape)
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        t, b, h, w, _ = x.shape
        out = (t - kt + 1, b, conv_output_size(h, k, s, p), conv_output_size(w, k, s, p))
        impl = self.impl
        if impl == "auto":
            impl = choose_video_impl((*out, self.features), kt, x.shape[-1])
        if impl == "native":
            pad = ((0, 0),) + ((p, p),) * 2
            y = conv_reference(jnp.swapaxes(x, 0, 1), kernel, (1, s, s), pad)
            return jnp.swapaxes(y, 0, 1)
        if impl == "slices":
            return conv_slices(x, kernel, s, p)
        forward = "lax" if impl in ("mixed", "winograd_mixed") else "products"
        if impl.startswith("winograd") and kt > 1 and x.shape[0] - kt + 1 > 1:

            def spatial(frames: jax.Array, kernel2d: jax.Array) -> jax.Array:
                return conv_taps(frames, kernel2d[None], s, p, self.taps, forward=forward)

            loop = choose_winograd_loop((*out, self.features))
            return winograd.conv_time_winograd(x, kernel, self.winograd_tile, spatial, loop)
        return conv_taps(x, kernel, s, p, self.taps, forward=forward, by_frame=True)
