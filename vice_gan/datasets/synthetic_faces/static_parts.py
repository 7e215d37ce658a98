"""The parts of a synthetic face that no action unit moves: hair, head, neck, ears, nose, beard,
glasses. Drawn once per take on a one-frame canvas (see renderer._static_layer).

Everything takes a `Patch` whose `u`, `v` are face-local pixel coordinates; `face_sdf`,
`skin_colour` and `draw_beard` also take explicit coordinates so that the chin pass of
`dynamic_parts` can redraw the lower face stretched by a jaw drop.
"""

import numpy as np

from vice_gan.datasets.synthetic_faces import identity as identity_lib
from vice_gan.datasets.synthetic_faces.canvas import (
    Patch,
    coverage,
    ellipse_sdf,
    segment_sdf,
    vmax,
    vmin,
)

Identity = identity_lib.Identity


def face_sdf(ident: Identity, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance to the face outline: an ellipse above the centre, a superellipse below.

    The lower half's exponent `ident.jaw` goes from a round (2) to a square (3.5) jaw; both halves
    have half width `face_w` at v = 0, so the outline is continuous.
    """
    lower = v > 0
    b = np.where(lower, ident.face_bot, ident.face_top)
    n = np.where(lower, ident.jaw, 2.0)
    r = ((np.abs(u) / ident.face_w) ** n + (np.abs(v) / b) ** n) ** (1.0 / n)
    return (r - 1.0) * np.minimum(ident.face_w, b)


def skin_colour(ident: Identity, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shaded skin [..., 3]: darker towards the outline, a cue of a rounded head under flat light."""
    b = np.where(v > 0, ident.face_bot, ident.face_top)
    r2 = (u / ident.face_w) ** 2 + (v / b) ** 2
    shade = 1.04 - 0.2 * r2 * r2 - 0.03 * (u / ident.face_w)
    return np.asarray(ident.skin, np.float32) * shade[..., None]


def beard_mask(ident: Identity, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, float]:
    """Opacity of the beard (before the face mask) and its strength, for the identity's style.

    Returns:
      (coverage broadcast over u, v in [0, 1], opacity multiplier); (0, 0) without a beard.
    """
    style = ident.beard
    if style == "none":
        return np.zeros(()), 0.0
    mw = ident.mouth_w
    # Moustache: a band above the upper lip, drooping and thinning towards its ends.
    x = np.clip(u / (mw + 1.2), -1.0, 1.0)
    centre = ident.mouth_v - ident.lip_up - 0.8 + 1.2 * x * x
    half = 1.1 * np.sqrt(1.0 - x * x) + 0.15
    moustache = vmax(np.abs(v - centre) - half, np.abs(u) - (mw + 1.2))
    if style == "moustache":
        return coverage(moustache, 1.5), 0.95
    if style == "goatee":
        chin = ellipse_sdf(
            u,
            v,
            0.0,
            ident.face_bot - 1.5,
            0.7 * mw,
            ident.face_bot - ident.mouth_v - ident.lip_lo - 2.0,
        )
        return coverage(np.minimum(moustache, chin), 1.5), 0.95
    # Full beard and stubble: the lower face below a line that rises to the sideburns.
    side = np.clip((np.abs(u) / ident.face_w - 0.35) / 0.5, 0.0, 1.0)
    top = ident.nose_v + 1.4 + (ident.eye_v + 4.5 - ident.nose_v - 1.4) * side * side
    return coverage(top - v, 1.5), (0.92 if style == "full" else 0.35)


def beard_colour(ident: Identity) -> np.ndarray:
    """Beard colour [3]: the hair colour, stubble mixed with the skin."""
    hair = np.asarray(ident.hair, np.float32)
    return (
        0.6 * hair + 0.4 * np.asarray(ident.skin, np.float32) * 0.5
        if ident.beard == "stubble"
        else hair
    )


def draw_lower_face(p: Patch, ident: Identity, u: np.ndarray, v: np.ndarray) -> None:
    """Skin and beard of the face at coordinates (u, v) (stretched by the chin pass)."""
    face = coverage(face_sdf(ident, u, v))
    skin = skin_colour(ident, u, v)
    p.paint(face, skin)
    # Soft shadows that make the flat disc read as a face: below the cheekbones and in the
    # hollow under the lower lip (mentolabial sulcus).
    shadow = np.asarray(ident.skin, np.float32) * 0.7
    for sgn in (-1.0, 1.0):
        hollow = ellipse_sdf(u, v, sgn * (ident.face_w - 2.5), ident.mouth_v - 2.5, 2.5, 5.0)
        p.paint(0.22 * face * coverage(hollow, 6.0), shadow)
    sulcus = ellipse_sdf(u, v, 0.0, ident.mouth_v + ident.lip_lo + 1.6, 0.55 * ident.mouth_w, 0.9)
    p.paint(0.3 * coverage(sulcus, 3.0), shadow)
    beard, strength = beard_mask(ident, u, v)
    if strength > 0:
        p.paint(beard * face * strength, beard_colour(ident))


def _hair_cap(ident: Identity, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance to the hair mass around the skull (bumpy for curly hair)."""
    vol = ident.hair_volume + (2.0 if ident.hair_style == "curly" else 0.0)
    cv = -0.3 * ident.face_top
    ru, rv = ident.face_w + 0.8 * vol, 0.7 * ident.face_top + vol + 0.3
    d = ellipse_sdf(u, v, 0.0, cv, ru, rv)
    if ident.hair_style == "curly":
        d = d - 0.9 * np.sin(11.0 * np.arctan2(v - cv, u))
    if ident.hair_style == "bun":
        d = np.minimum(d, np.hypot(u, v - (cv - rv - 2.5)) - 4.5)
    if ident.hair_style == "long":
        # A curtain down to the shoulders with rounded lower corners.
        du = np.abs(u) - (ident.face_w + vol - 2.0)
        dv = v - (ident.face_bot + 3.0)
        drape = np.hypot(np.maximum(du, 0), np.maximum(dv, 0)) - 3.0
        d = np.minimum(d, np.maximum(drape, cv - v))
    if ident.hair_style == "bald":
        # Only a horseshoe of hair around the sides and back remains.
        d = vmax(d, 0.72 * ident.face_w - np.abs(u), -0.55 * ident.face_top - v)
    return d


def _hair_front(ident: Identity, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance to the hair lying in front of the face: above the hairline, sideburns."""
    cap = _hair_cap(ident, u, v)
    x = u / ident.face_w
    hairline = ident.hairline + 1.2 * ident.parting * x - 1.5 * x * x
    if ident.hair_style == "fringe":
        # A straight, slightly jagged fringe.
        hairline = ident.hairline + 0.4 * np.sin(2.3 * u) + 0.8 * x * x
    if ident.hair_style == "curly":
        hairline = hairline + 0.6 * np.sin(1.7 * u)
    side_len = ident.eye_v + (8.0 if ident.hair_style == "long" else 0.5)
    side_w = 2.2 if ident.hair_style == "long" else 1.4
    sides = np.maximum(ident.face_w - side_w - np.abs(u), v - side_len)
    front = np.maximum(cap, np.minimum(v - hairline, sides))
    if ident.hair_style == "long":
        front = np.minimum(front, np.maximum(cap, sides))
    return front


def hair_colour(ident: Identity, u: np.ndarray, v: np.ndarray, gain: float) -> np.ndarray:
    """Hair colour [..., 3] with strands: stripes radiating from the crown (curls for curly)."""
    crown = -ident.face_top * 0.6
    angle = np.arctan2(v - crown, u)
    freq = 40.0 if ident.hair_style == "curly" else 26.0
    radius = np.hypot(u, v - crown)
    strands = 0.95 + 0.03 * np.sin(freq * angle + 0.4 * radius) + 0.02 * np.sin(67.0 * angle)
    return np.asarray(ident.hair, np.float32) * (gain * strands)[..., None]


def draw_static(p: Patch, ident: Identity) -> None:
    """Draws everything static behind the eyes and brows on a full-canvas, one-frame patch."""
    u, v = p.u, p.v
    skin = np.asarray(ident.skin, np.float32)
    # Back hair, then neck and shirt, then ears and face.
    p.paint(coverage(_hair_cap(ident, u, v)), hair_colour(ident, u, v, 0.85))
    neck_w = 0.55 * ident.face_w
    p.paint(coverage(np.maximum(np.abs(u) - neck_w, -v)), skin * 0.8)
    shoulders = ellipse_sdf(u, v, 0.0, ident.face_bot + 22.0, ident.face_w + 16.0, 13.0)
    p.paint(coverage(shoulders), ident.shirt)
    p.paint(coverage(shoulders + 1.0) * coverage(np.abs(u) - neck_w + 1.0), skin * 0.78)
    for sgn in (-1.0, 1.0):
        ear_u, ear_v = sgn * (ident.face_w - 0.3), ident.eye_v + 2.5
        s = ident.ear_size
        p.paint(coverage(ellipse_sdf(u, v, ear_u, ear_v, 2.3 * s, 3.7 * s)), skin * 0.93)
        inner = ellipse_sdf(u, v, ear_u + sgn * 0.5, ear_v, 1.1 * s, 2.4 * s)
        p.paint(0.35 * coverage(inner, 2.0), skin * 0.6)
    # Shadow cast by the chin on the neck.
    p.paint(0.45 * coverage(ellipse_sdf(u, v, 0.0, ident.face_bot, neck_w, 3.0), 3.0), skin * 0.6)
    draw_lower_face(p, ident, u, v)
    # Eye sockets lie in the shadow of the brow ridge.
    for sgn in (-1.0, 1.0):
        socket = ellipse_sdf(
            u, v, sgn * ident.eye_sep, ident.eye_v - 0.7, ident.eye_w + 2.2, ident.eye_h + 2.3
        )
        p.paint(0.28 * coverage(socket, 5.0), np.asarray(ident.skin, np.float32) * 0.65)
    _draw_nose(p, ident)


def _draw_nose(p: Patch, ident: Identity) -> None:
    """Nose: bridge shadow on one side, tip highlight, the shadow under the tip, the wings."""
    u, v = p.u, p.v
    skin = np.asarray(ident.skin, np.float32)
    ny, nw = ident.nose_v, ident.nose_w
    bridge = segment_sdf(u, v, -1.3, ident.eye_v + 1.0, -0.8 * nw, ny - 0.8) - 0.5
    p.paint(0.3 * coverage(bridge, 2.0), skin * 0.65)
    p.paint(0.25 * coverage(ellipse_sdf(u, v, 0.0, ny - 1.0, 1.3, 1.1), 2.0), (1.0, 0.95, 0.9))
    p.paint(0.35 * coverage(ellipse_sdf(u, v, 0.0, ny + 1.0, 0.95 * nw, 0.9), 1.5), skin * 0.6)
    for sgn in (-1.0, 1.0):
        wing = np.abs(ellipse_sdf(u, v, sgn * 0.8 * nw, ny - 0.1, 1.3, 1.2)) - 0.3
        wing = np.maximum(wing, ny - 0.8 - v)
        p.paint(0.45 * coverage(wing), skin * 0.6)


def draw_overlay(p: Patch, ident: Identity) -> None:
    """Front hair and glasses on a zero RGBA canvas (premultiplied RGB, alpha in channel 3)."""
    u, v = p.u, p.v
    # Front hair is a little lighter than the back hair, to separate the two.
    hair = hair_colour(ident, u, v, 1.0)
    p.paint(
        coverage(_hair_front(ident, u, v)), np.concatenate([hair, np.ones_like(hair[..., :1])], -1)
    )
    if ident.glasses == "none":
        return
    frame, th = (*ident.frame, 1.0), 0.45
    cu, cv = ident.eye_sep, ident.eye_v + 0.3
    rims, lenses = [], []
    for sgn in (-1.0, 1.0):
        if ident.glasses == "round":
            lens = np.hypot(u - sgn * cu, v - cv) - (ident.eye_w + 1.5)
        else:
            du, dv = np.abs(u - sgn * cu) - (ident.eye_w + 1.4), np.abs(v - cv) - 2.9
            lens = np.hypot(np.maximum(du, 0), np.maximum(dv, 0)) + np.minimum(
                np.maximum(du, dv), 0
            )
        lenses.append(lens)
        rims.append(np.abs(lens) - th)
        outer = sgn * (cu + ident.eye_w + 1.5)
        rims.append(segment_sdf(u, v, outer, cv - 1.0, sgn * (ident.face_w + 0.5), cv - 1.5) - th)
    p.paint(0.12 * coverage(np.minimum(*lenses)), (0.12, 0.14, 0.16, 1.0))
    bridge = segment_sdf(
        u, v, -(cu - ident.eye_w - 1.5), cv - 1.0, cu - ident.eye_w - 1.5, cv - 1.0
    )
    rims.append(bridge - th)
    p.paint(coverage(vmin(*rims)), frame)
