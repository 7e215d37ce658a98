"""Drawing primitives of the synthetic_faces renderer: canvases, patches, implicit shapes.

Shapes are approximate signed distances in face units (one unit is ZOOM output pixels; negative
inside). Coverage is a linear ramp one canvas pixel wide centred on the boundary: analytic
antialiasing, refined by supersampling and box-filtering in `renderer._warp` when SS > 1.
"""

import dataclasses
import functools

import numpy as np

from vice_gan.datasets import schema
from vice_gan.datasets.synthetic_faces import identity as identity_lib

# Supersampling factor of the canvas (the canvas is 64 * SS pixels square).
SS = 1
# Output pixels per face-coordinate unit: identities are laid out in units of a 64-px frame and
# then magnified, so the face fills the frame like a tight face crop of MUG.
ZOOM = 1.4


def coverage(d: np.ndarray, soft: float = 1.0) -> np.ndarray:
    """Fraction of a canvas pixel covered by the shape with signed distance `d`.

    Args:
      d: signed distance in face units, any shape.
      soft: widen the ramp by this factor (soft shading edges such as blush and shadows).
    """
    return np.clip(0.5 - d * (SS * ZOOM / soft), 0.0, 1.0)


def ellipse_sdf(u, v, cu, cv, ru, rv) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse (Inigo Quilez's k0 * (k0 - 1) / k1).

    All arguments broadcast: u [.., 1, W], v [.., H, 1], centre and radii scalars or [T, 1, 1].
    """
    x, y = (u - cu) / ru, (v - cv) / rv
    k0 = np.sqrt(x * x + y * y)
    k1 = np.sqrt((x / ru) ** 2 + (y / rv) ** 2) + 1e-6
    return k0 * (k0 - 1.0) / k1


def segment_sdf(u, v, u0, v0, u1, v1) -> np.ndarray:
    """Distance to the segment (u0, v0)-(u1, v1); endpoints broadcast like u and v."""
    du, dv = u1 - u0, v1 - v0
    h = np.clip(((u - u0) * du + (v - v0) * dv) / (du * du + dv * dv + 1e-9), 0.0, 1.0)
    return np.hypot(u - u0 - h * du, v - v0 - h * dv)


def vmax(*ds: np.ndarray) -> np.ndarray:
    """Broadcasting maximum of several distances (intersection of shapes)."""
    return functools.reduce(np.maximum, ds)


def vmin(*ds: np.ndarray) -> np.ndarray:
    """Broadcasting minimum of several distances (union of shapes)."""
    return functools.reduce(np.minimum, ds)


@dataclasses.dataclass
class Patch:
    """A rectangular window of a canvas with its face-local pixel-centre coordinates.

    Attributes:
      rgb: float32 [C, T, H, W] view into the canvas (writes go to the canvas).
      u: float32 [1, 1, W] horizontal face coordinate of each column.
      v: float32 [1, H, 1] vertical face coordinate of each row.
      rows, cols: the window's slices of the canvas.
    """

    rgb: np.ndarray
    u: np.ndarray
    v: np.ndarray
    rows: slice
    cols: slice

    def paint(self, cov: np.ndarray, colour) -> None:
        """Alpha-composites `colour` over the patch in place with per-pixel opacity `cov`.

        Only the bounding box of the non-zero coverage is touched, which makes thin lines and
        features whose AU is zero in this take nearly free.

        Args:
          cov: opacity in [0, 1], broadcastable to [T, H, W].
          colour: [C], or [..., H, W, C] broadcastable to [T, H, W, C] (channels last).
        """
        _, t, h, w = self.rgb.shape
        cov = np.broadcast_to(np.asarray(cov, np.float32), (t, h, w))
        rows = np.flatnonzero(cov.any(axis=(0, 2)))
        if rows.size == 0:
            return
        cols = np.flatnonzero(cov[:, rows[0] : rows[-1] + 1].any(axis=(0, 1)))
        rs, cs = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
        colour = np.asarray(colour, np.float32)
        if colour.ndim == 1:
            colour = colour[:, None, None, None]
        else:
            colour = np.moveaxis(colour, -1, 0)
            colour = colour[..., rs, cs] if colour.shape[-2:] == (h, w) else colour
        target = self.rgb[:, :, rs, cs]
        diff = colour - target
        diff *= cov[:, rs, cs]
        target += diff


@dataclasses.dataclass
class Canvas:
    """A supersampled [C, T, 64 * SS, 64 * SS] float image in face-local coordinates."""

    ident: identity_lib.Identity
    rgb: np.ndarray

    def patch(self, u0: float, u1: float, v0: float, v1: float) -> Patch:
        """The window covering face coordinates u in [u0, u1], v in [v0, v1] (clipped)."""
        n = self.rgb.shape[-1]
        x0, y0 = schema.IMAGE_SIZE / 2, self.ident.face_cy

        def span(a: float, b: float, origin: float) -> slice:
            lo = int(np.clip(np.floor((origin + a * ZOOM) * SS), 0, n))
            hi = int(np.clip(np.ceil((origin + b * ZOOM) * SS), lo, n))
            return slice(lo, hi)

        cols, rows = span(u0, u1, x0), span(v0, v1, y0)
        u = ((np.arange(cols.start, cols.stop, dtype=np.float32) + 0.5) / SS - x0) / ZOOM
        v = ((np.arange(rows.start, rows.stop, dtype=np.float32) + 0.5) / SS - y0) / ZOOM
        return Patch(self.rgb[:, :, rows, cols], u[None, None, :], v[None, :, None], rows, cols)
