"""Winograd (Toom-Cook) form of D_V's convolutions along time: the same conv, fewer products.

D_V's 3-D convolutions are VALID with stride 1 along time and kt = 4 temporal taps, so along
time each is a 1-D correlation y[t] = sum_dt x[t + dt] * w[dt], where x[t] is a frame and
w[dt] a 2-D (spatial) kernel, and '*' the spatial convolution. Winograd's minimal filtering
algorithm F(m, r) computes m consecutive outputs of an r-tap correlation from m + r - 1 inputs
with m + r - 1 "multiplications" instead of m * r:

    y[tile] = AT @ ((G @ w) (.) (BT @ x[tile]))

where the products (.) are spatial convolutions of transformed frames with transformed kernels,
and AT, G, BT are small constant matrices (Toom-Cook: evaluate at m + r - 2 points and
infinity, multiply pointwise, interpolate). For D_V (kt = 4) with F(4, 4) that is 7 spatial
convolutions per 4 output frames instead of 16: layer by layer (output lengths 13, 10, 7, 4 at
T = 16) 28/52, 21/40, 14/28, 7/16 of the multiply-adds, forward and backward alike (autodiff of
a linear transform, a product and a linear transform). The transforms are sums of frames with
small constant weights; the spatial convolutions go through `layers.conv_taps`, all seven in
one loop on small layers (`layers.choose_winograd_loop`). D_V's RGB first layer keeps the
time-stacked direct form, and so do tiny layers, which then compile faster
(`layers.choose_video_impl` says why).

The result equals the direct convolution in exact arithmetic; in float32 it differs by rounding
(tests/test_winograd.py measures it against nn.Conv).
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Interpolation points besides infinity, per number of points - 1 (Lavin & Gray 2016's choices:
# small integers and their reciprocals keep the transforms' rounding error small).
_POINTS = (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, -3.0)


def _vandermonde(points: Sequence[float], n: int) -> np.ndarray:
    """Rows [1, p, ..., p^(n-1)] per finite point, then [0, ..., 0, 1] for infinity."""
    rows = [[p**j for j in range(n)] for p in points]
    rows.append([0.0] * (n - 1) + [1.0])
    return np.array(rows, np.float64)


def toom_cook(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matrices of F(m, r): AT [m, a], G [a, r], BT [a, a] (a = m + r - 1, float64).

    For d of length a and g of length r, the correlation sum_k d[i + k] g[k] (i < m) equals
    AT @ ((G @ g) * (BT @ d)). Derivation: the convolution c = a (*) g of polynomials is
    V_a^-1 ((V_m a) (.) (V_r g)) with Vandermonde evaluations V at the points; the correlation
    is that map's transpose in a, so AT = V_m^T, G = V_r, BT = (V_a^-1)^T.
    """
    a = m + r - 1
    if a - 1 > len(_POINTS):
        raise ValueError(f"F({m}, {r}) needs {a - 1} finite points, have {len(_POINTS)}")
    pts = _POINTS[: a - 1]
    at = _vandermonde(pts, m).T
    g = _vandermonde(pts, r)
    bt = np.linalg.inv(_vandermonde(pts, a)).T
    return at, g, bt


def _combine(coeffs: np.ndarray, parts: Sequence[jax.Array]) -> jax.Array:
    """sum_i coeffs[i] * parts[i], skipping zero weights and multiplying by +-1 for free."""
    out = None
    for c, p in zip(coeffs, parts, strict=True):
        c = float(c)
        if abs(c) < 1e-12:
            continue
        term = p if c == 1.0 else -p if c == -1.0 else p * jnp.asarray(c, p.dtype)
        out = term if out is None else out + term
    return out if out is not None else jnp.zeros_like(parts[0])


def num_tiles(out_len: int, m: int) -> int:
    """Tiles of m outputs that cover out_len output frames."""
    return -(-out_len // m)


def _interleave(parts: Sequence[jax.Array]) -> jax.Array:
    """m arrays [tiles, ...] (frame r of every tile) -> [tiles * m, ...] in time order."""
    y = jnp.stack(parts, axis=1)  # [tiles, m, ...]
    return y.reshape(y.shape[0] * y.shape[1], *y.shape[2:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _tile_points(bt: tuple, m: int, tiles: int, x: jax.Array) -> tuple[jax.Array, ...]:
    """Winograd's input transform: point j of every tile, sum_i bt[j][i] x[i + m*u] (u < tiles).

    Its gradient is written out (`_tile_points_bwd`): autodiff would transpose each of the a
    strided frame slices into a zero-padded copy of the whole input and sum them, and XLA gave
    those copies buffers of their own (D_V's layer 2 at ndf=32: ten of 30 MiB). Written out,
    the whole GAN step's XLA scratch is 2574 instead of 2839 MiB at ndf=64 (981 / 1015 at 32,
    278 / 285 at 16) at the same speed (BENCHMARKS.md).
    """
    a = len(bt)
    frames = [x[i : i + m * (tiles - 1) + 1 : m] for i in range(a)]
    return tuple(_combine(np.asarray(bt[j]), frames) for j in range(a))


def _tile_points_fwd(bt, m, tiles, x):
    return _tile_points(bt, m, tiles, x), x.shape[0]


def _tile_points_bwd(bt, m, tiles, length, d_points):
    """dx[i + m*u] = sum_j bt[j][i] d_points[j][u]: frames q*m <= i < (q+1)*m of all tiles
    interleave into one run of tiles*m frames starting at frame q*m (q = 0: the tiles' own
    frames; q >= 1: the kt - 1 frames they share with the next tiles)."""
    a = len(bt)
    cols = np.asarray(bt).T  # cols[i] = bt[:, i]
    d_frames = [_combine(cols[i], d_points) for i in range(a)]
    lead = d_frames[0].shape[1:]
    pad = [(0, 0)] * len(lead)
    zero = jnp.zeros_like(d_frames[0])
    dx = None
    for q in range(num_tiles(a, m)):
        group = d_frames[q * m : (q + 1) * m]
        run = _interleave(group + [zero] * (m - len(group)))  # frame q*m + v*m + r
        run = jnp.pad(run, [(q * m, max(0, length - q * m - tiles * m))] + pad)[:length]
        dx = run if dx is None else dx + run
    return (dx,)


_tile_points.defvjp(_tile_points_fwd, _tile_points_bwd)


def conv_time_winograd(
    x: jax.Array, kernel: jax.Array, m: int, spatial_conv, loop: bool = True
) -> jax.Array:
    """VALID stride-1 correlation along time by F(m, kt), spatial part by `spatial_conv`.

    Args:
        x: [T, N, H, W, C_in], time-major.
        kernel: [kt, k, k, C_in, C_out].
        m: output frames per tile (F(m, kt)); the last tile is zero-padded and cropped.
        spatial_conv: (frames [F, N, H, W, C_in], kernel [k, k, C_in, C_out]) ->
            [F, N, Ho, Wo, C_out], the same 2-D conv applied to every frame.
        loop: the m + kt - 1 products as one loop (`lax.map`: XLA compiles one body, but
            the loop's stacked operands take more memory) or as separate products.

    Returns:
        [T - kt + 1, N, Ho, Wo, C_out].
    """
    kt = kernel.shape[0]
    out_len = x.shape[0] - kt + 1
    at, g, bt = toom_cook(m, kt)
    a = m + kt - 1
    tiles = num_tiles(out_len, m)
    need = tiles * m + kt - 1  # input frames that the tiles read
    if need > x.shape[0]:
        x = jnp.pad(x, [(0, need - x.shape[0])] + [(0, 0)] * (x.ndim - 1))
    taps = [kernel[dt] for dt in range(kt)]
    # The a products have one shape, so they can run as one loop (lax.map) whose body XLA
    # compiles once instead of a times: D_V's forward + backward at ndf=16 compiled in 5.5 s
    # instead of 8.1 s at the same speed; on large layers the loop's stacked operands cost
    # memory (the step at ndf=64: 3684 against 2839 MiB of XLA scratch; BENCHMARKS.md).
    kernels = [_combine(g[j], taps) for j in range(a)]
    bt_rows = tuple(map(tuple, bt.tolist()))  # static (hashable) for _tile_points

    def points_and_products(x, kernels):
        inputs = list(_tile_points(bt_rows, m, tiles, x))
        if loop:
            pairs = (jnp.stack(inputs), jnp.stack(kernels))
            stacked = jax.lax.map(lambda vk: spatial_conv(*vk), pairs)
            return [stacked[j] for j in range(a)]
        return [spatial_conv(v, k) for v, k in zip(inputs, kernels, strict=True)]

    # Rematerialised: the backward pass recomputes the a transformed inputs (element-wise sums
    # of frames, which the products' kernel gradients need) from x instead of keeping them
    # from the forward pass, where they are a / m times x's size and stayed live until D_V's
    # backward ran.
    products = jax.checkpoint(points_and_products)(x, kernels)
    outs = [_combine(at[u], products) for u in range(m)]
    y = _interleave(outs)  # [tiles * m, N, Ho, Wo, C_out]
    return y[:out_len]
