"""The parts of a synthetic face that FACS action units move, drawn per frame in small patches.

`a[n]` is the intensity of AU n as a float32 [T, 1, 1] array (it broadcasts against patch
coordinates u [1, 1, W] and v [1, H, 1]). Displacements are in face units (canvas.ZOOM output
pixels) at intensity 1 and are deliberately larger than on a real face, so that each emotion
reads at 64x64 (FACS Manual,
Ekman, Friesen & Hager 2002, describes the appearance changes reproduced here):
  AU1 inner brow up, AU2 outer brow up, AU4 brows down and together with glabella lines,
  AU5 upper lid up (sclera above the iris), AU6 cheeks up with crow's feet and a lower-lid bulge,
  AU7 lids tightened (lower lid up), AU9 nose wrinkled (transverse and oblique lines, nose
  wings and nostrils up, deeper nasolabial folds, cheeks up, eyes narrowed from below), medial
  brow down, AU10 upper lip up (upper teeth), AU12 corners up and out, AU15 corners down,
  AU16 lower lip down (lower teeth), AU17 chin boss up (lower lip pushed up, curved furrow
  above a dimpled chin), AU20 lips stretched sideways, AU23 lips thinned, AU25 lips apart,
  AU26 jaw (and chin) dropped, AU43 upper lids lowered (partly: drooping), AU45 eyelids closed,
  AU64 eyes (and upper lids) turned down.
"""

import numpy as np

from vice_gan.datasets.synthetic_faces import identity as identity_lib
from vice_gan.datasets.synthetic_faces import static_parts
from vice_gan.datasets.synthetic_faces.canvas import (
    Canvas,
    coverage,
    ellipse_sdf,
    segment_sdf,
    vmax,
)

Identity = identity_lib.Identity
SCLERA = (0.8, 0.78, 0.75)
TEETH = (0.86, 0.84, 0.78)  # teeth sit in the mouth's shade, never paper-white
MOUTH_INSIDE = (0.22, 0.06, 0.07)
TONGUE = (0.72, 0.33, 0.36)
LASHES = (0.08, 0.06, 0.06)
# Upper bounds of the AU-driven displacements, used to size the patches.
MAX_BROW_RAISE, MAX_JAW_DROP = 4.5, 4.5


def skin_shadow(ident: Identity) -> np.ndarray:
    """Colour [3] of shading and wrinkles on this subject's skin."""
    return np.asarray(ident.skin, np.float32) * 0.6


def upper_box(ident: Identity) -> tuple[float, float, float, float]:
    """(u0, u1, v0, v1) of the region holding brows, eyes and forehead lines."""
    half = ident.eye_sep + 1.2 * ident.eye_w + 3.5
    top = ident.eye_v - ident.brow_gap - 11.0
    return -half, half, top, ident.eye_v + 2.2 * ident.eye_h + 3.5


def mouth_geometry(ident: Identity, a: dict) -> dict:
    """Per-frame mouth shape [T, 1, 1] arrays from the lip and jaw AUs.

    Returns a dict with: `w` corner half width, `corner` vertical corner offset (+ down), `up`
    upper-lip lift from AU25/26, `raise10` AU10 upper-lip lift, `down` lower-lip drop, `push`
    AU17 lift of the lower lip's middle, `lip_up`/`lip_lo` lip thicknesses, `drop` chin drop.
    """
    a10, a12, a15, a16, a20, a23, a25, a26 = (a[n] for n in (10, 12, 15, 16, 20, 23, 25, 26))
    a17 = a[17]
    parted = np.maximum(a25, a26)
    thin = (1.0 - 0.55 * a23) * (1.0 - 0.3 * a12) * (1.0 - 0.3 * a20)
    return {
        # AU12 and AU20 widen the mouth; AU23 presses it narrower; an open jaw pulls the corners
        # in (the "O" of surprise) unless AU20 holds them apart (fear).
        "w": ident.mouth_w
        * (1 + 0.22 * a12 + 0.3 * a20 - 0.14 * a23 - 0.2 * a26 * (1 - a20) + 0.05 * a10),
        "corner": -3.4 * a12 + 3.5 * a15 + 2.0 * a20 + 0.5 * a16,
        # A jaw dropped with relaxed lips (AU26 without AU20) lifts the upper lip off the teeth
        # too, so the opening is the upright oval of surprise, not a flat-topped laughing "D".
        "up": 0.4 * a25 + 0.3 * a26 + 1.2 * a26 * (1 - a20) + 0.7 * a12 * parted,
        "raise10": 2.0 * a10,
        "push": 1.8 * a17,
        "down": 0.9 * a25 + 5.2 * a26 + 2.4 * a16 + 1.8 * a12 * parted + 0.9 * a20 * parted,
        "lip_up": ident.lip_up * thin,
        # AU16 everts the lower lip; AU17 pushes it up and out (the pout), so it looks fuller.
        "lip_lo": ident.lip_lo * thin * (1.0 + 0.25 * a16 + 0.3 * a17),
        "drop": MAX_JAW_DROP / 5.2 * (5.2 * a26 + 0.6 * a16),
    }


def draw_dynamic(cv: Canvas, ident: Identity, a: dict, active: dict) -> None:
    """Draws every AU-driven feature on the [T, N, N, 3] canvas, in back-to-front order.

    Args:
      cv: canvas holding T copies of the static layer.
      ident: the subject.
      a: AU number -> float32 [T, 1, 1] intensity.
      active: AU number -> whether it is non-zero anywhere in the take (passes whose AUs are all
        zero are skipped, which makes neutral takes cheap).
    """
    m = mouth_geometry(ident, a)
    if active[26] or active[16]:
        _chin(cv, ident, m)
    if active[17]:
        _chin_boss(cv, ident, a, m)
    _cheeks_and_folds(cv, ident, a, m, active)
    _nostrils(cv, ident, a, active)
    _mouth(cv, ident, a, m)
    if active[1] or active[2] or active[4]:
        _forehead(cv, ident, a)
    for sgn in (-1.0, 1.0):
        _brow(cv, ident, a, sgn)
        _eye(cv, ident, a, sgn, active)


def _chin(cv: Canvas, ident: Identity, m: dict) -> None:
    """Redraws the lower face stretched downwards by the jaw drop (AU26, a little for AU16)."""
    top = ident.mouth_v + 1.0
    p = cv.patch(-ident.face_w, ident.face_w, top, ident.face_bot + MAX_JAW_DROP + 1.0)
    # Map each pixel back to where it was before the drop: identity at `top`, the chin end
    # moved down by `drop`; redrawing skin and beard there keeps the shading continuous.
    span = ident.face_bot - top
    v0 = top + (p.v - top) * span / (span + m["drop"])
    static_parts.draw_lower_face(p, ident, p.u, v0)


def _chin_boss(cv: Canvas, ident: Identity, a: dict, m: dict) -> None:
    """AU17: the chin boss pushed up, with a deep curved furrow above it and a dimpled skin."""
    skin = np.asarray(ident.skin, np.float32)
    a17 = a[17]
    mw = ident.mouth_w
    top = ident.mouth_v + ident.lip_lo
    p = cv.patch(-mw - 1.0, mw + 1.0, top - 1.0, ident.face_bot + 1.0)
    # Where a beard covers the chin it hides the skin's folds.
    beard, strength = static_parts.beard_mask(ident, p.u, p.v)
    bare = 1.0 - strength * beard
    # The boss bulges up towards the lower lip (which AU17 lifts): its upper outline is the
    # mentolabial furrow, an arch.
    cu, cv0 = 0.0, top + 0.5 * m["drop"] + 4.2 - 0.9 * a17
    rv = 3.0
    boss = ellipse_sdf(p.u, p.v, cu, cv0, 0.62 * mw, rv)
    furrow = np.maximum(np.abs(boss) - 0.3, p.v - cv0)
    p.paint(0.75 * a17 * bare * coverage(furrow, 1.4), skin * 0.5)
    p.paint(0.35 * a17 * bare * coverage(boss + 0.6, 3.0), np.minimum(skin * 1.08 + 0.03, 1))
    # The "orange peel" of the wrinkled chin: a few small dimples on the boss.
    for du, dv in ((-0.35, 0.1), (0.3, -0.1), (0.0, 0.45), (-0.15, -0.35), (0.4, 0.4)):
        dot = np.hypot(p.u - du * mw, p.v - cv0 - dv * rv) - 0.4
        p.paint(0.35 * a17 * bare * coverage(dot, 1.5), skin * 0.6)


def _cheeks_and_folds(cv: Canvas, ident: Identity, a: dict, m: dict, active: dict) -> None:
    """Cheek raise (AU6, AU12 pushes the cheeks up too) and the nasolabial folds."""
    skin = np.asarray(ident.skin, np.float32)
    for sgn in (-1.0, 1.0):
        if active[6] or active[12] or active[9]:
            # AU9 pushes the infraorbital triangle up as well, less than AU6 does.
            cu, cv0 = sgn * (ident.eye_sep + 0.5), ident.eye_v + 6.0
            p = cv.patch(cu - 5.0, cu + 5.0, cv0 - 5.0, cv0 + 4.5)
            lift = 1.6 * a[6] + 0.8 * a[12] + 1.0 * a[9]
            strength = np.maximum(np.maximum(a[6], 0.7 * a[12]), 0.6 * a[9])
            apple = ellipse_sdf(p.u, p.v, cu, cv0 - lift, 3.4, 2.4)
            p.paint(0.45 * strength * coverage(apple, 3.0), np.minimum(skin * 1.08 + 0.05, 1))
            below = np.abs(ellipse_sdf(p.u, p.v, cu, cv0 - lift + 0.3, 3.6, 2.7)) - 0.3
            below = np.maximum(below, cv0 - lift + 1.0 - p.v)
            p.paint(0.35 * strength * coverage(below, 2.0), skin * 0.7)
        # Fold from the nose wing to just outside the mouth corner; AU9/10/12 deepen it.
        nu, nv = sgn * (ident.nose_w + 0.9), ident.nose_v - 1.2 - 0.7 * a[9] - 0.5 * a[10]
        eu, ev = sgn * (m["w"] + 1.3), ident.mouth_v + m["corner"] + 0.6
        mu, mv = 0.5 * (nu + eu) + sgn * 1.0, 0.5 * (nv + ev)
        far = ident.mouth_w * 1.35 + 3.0
        p = cv.patch(
            min(sgn * ident.nose_w, sgn * far),
            max(sgn * ident.nose_w, sgn * far),
            ident.nose_v - 3.5,
            ident.mouth_v + 5.0,
        )
        fold = np.minimum(
            segment_sdf(p.u, p.v, nu, nv, mu, mv), segment_sdf(p.u, p.v, mu, mv, eu, ev)
        )
        depth = np.clip(a[12] + 0.7 * a[10] + 0.7 * a[9] + 0.3 * a[6], 0.0, 1.0)
        # AU9 and AU10 raise the infraorbital triangle against the fold: wider and darker.
        deep = np.clip(a[9] + a[10], 0.0, 1.0)
        p.paint(
            (0.15 + 0.55 * depth) * coverage(fold - 0.35 - 0.3 * deep, 1.5),
            skin * (0.62 - 0.1 * deep[..., None]),
        )


def _nostrils(cv: Canvas, ident: Identity, a: dict, active: dict) -> None:
    """Nostrils, raised and flared by AU9 (and raised by AU10); AU9's wrinkles on the bridge."""
    skin = np.asarray(ident.skin, np.float32)
    nw, ny = ident.nose_w, ident.nose_v
    p = cv.patch(-nw - 3.0, nw + 3.0, ident.eye_v + 0.5, ny + 2.0)
    lift = 1.2 * a[9] + 0.5 * a[10]
    if active[9] or active[10]:
        # The nose wings are pulled up (AU9 more than AU10): their crease, drawn by the static
        # layer at rest, is redrawn higher, deeper and wider, with shadow filling the space below.
        for sgn in (-1.0, 1.0):
            wu, wv = sgn * 0.8 * nw, ny - 0.1 - lift
            wing = ellipse_sdf(p.u, p.v, wu, wv, 1.3 + 0.3 * a[9], 1.2)
            crease = np.maximum(np.abs(wing) - 0.35, wv - 0.8 - p.v)
            p.paint(np.clip(lift, 0, 1) * 0.6 * coverage(crease), skin * 0.5)
    for sgn in (-1.0, 1.0):
        nostril = ellipse_sdf(p.u, p.v, sgn * 0.55 * nw, ny + 0.4 - lift, 0.8 + 0.4 * a[9], 0.5)
        p.paint(0.85 * coverage(nostril), skin * 0.35)
    if active[9]:
        # Skin bunched by the shortened nose: deep transverse wrinkles across its root, with the
        # skin bulging lighter between them, and oblique "bunny lines" down its sides.
        for k, dv in enumerate((1.2, 2.3, 3.4)):
            y = ident.eye_v + dv + 0.22 * p.u * p.u
            half = 2.6 - 0.3 * k
            line = np.maximum(np.abs(p.v - y) - 0.32, np.abs(p.u) - half)
            p.paint(0.9 * a[9] * coverage(line, 1.2), skin * 0.45)
            bulge = np.maximum(np.abs(p.v - y - 0.55) - 0.2, np.abs(p.u) - half + 0.3)
            p.paint(0.5 * a[9] * coverage(bulge, 1.2), np.minimum(skin * 1.12 + 0.03, 1))
        for sgn in (-1.0, 1.0):
            for k in range(2):
                u0, v0 = sgn * (1.3 + 0.6 * k), ident.eye_v + 1.8 + 0.6 * k
                bunny = segment_sdf(p.u, p.v, u0, v0, u0 + sgn * 2.2, v0 + 3.0) - 0.3
                p.paint((0.8 - 0.2 * k) * a[9] * coverage(bunny, 1.2), skin * 0.5)


def _mouth(cv: Canvas, ident: Identity, a: dict, m: dict) -> None:
    """Lips, the dark opening, teeth and tongue (layouts of u, v, s: [T, 1, W] / [1, H, 1])."""
    lips = np.asarray(ident.lips, np.float32)
    wmax = ident.mouth_w * 1.4 + 1.5
    top = ident.mouth_v - ident.lip_up - 4.5
    p = cv.patch(-wmax, wmax, top, ident.mouth_v + ident.lip_lo + 9.5)
    u, v, w = p.u, p.v, m["w"]
    s = u / w
    s2 = s * s
    inside = np.clip(1.0 - s2, 0.0, 1.0)
    ell = np.sqrt(inside)
    # AU20 stretches the opening into a flat-topped, flat-bottomed grimace (fear).
    prof = inside ** (0.6 - 0.3 * a[20])
    # The upper lip line stays flatter than the lower one, as in a real smile or frown.
    mid_up = ident.mouth_v + m["corner"] * np.abs(s) ** 2.4
    mid_lo = ident.mouth_v + m["corner"] * s2
    # AU10 lifts the upper lip in a squarish, slightly one-sided sneer (disgust is often
    # asymmetric); the side follows the subject's hair parting so it is stable per subject.
    sneer = np.clip(1 - s2 * s2, 0, 1) * (1.0 + 0.35 * np.sign(ident.parting) * s)
    # AU17 pushes the middle of the lower lip up (and the upper lip a little with it): the
    # mouth closes into an inverted U.
    ui = mid_up - m["up"] * prof - m["raise10"] * sneer - 0.35 * m["push"] * prof
    li = np.maximum(mid_lo + m["down"] * prof - m["push"] * prof, ui)
    bow = 0.3 * ident.lip_up * np.exp(-(((np.abs(s) - 0.3) / 0.16) ** 2))
    uo = ui - m["lip_up"] * ell - bow
    lo = li + m["lip_lo"] * ell
    ends = (np.abs(s) - 1.0) * w
    lip_cov = coverage(vmax(uo - v, v - lo, ends))
    p.paint(lip_cov, lips)
    p.paint(lip_cov * coverage(v - ui), lips * 0.88)  # the upper lip is in shadow
    line = np.maximum(np.abs(v - 0.5 * (ui + li)) - 0.3, (np.abs(s) - 1.03) * w + 0.6 * a[20])
    p.paint(0.85 * coverage(line), lips * 0.4)
    # Corner accents make the corner direction (up: smile, down: frown) legible. Lips stretched
    # sideways (AU20) have no corner pit, so they fade (as does the lip line's overshoot).
    for sgn in (-1.0, 1.0):
        dot = np.hypot(u - sgn * w, v - ident.mouth_v - m["corner"]) - 0.55
        p.paint(0.55 * (1.0 - 0.8 * a[20]) * coverage(dot, 1.5), lips * 0.45)
    d_open = vmax(ui - v, v - li, ends)
    open_cov = coverage(d_open)
    p.paint(open_cov, MOUTH_INSIDE)
    # Upper teeth hang from the upper lip; the corners stay dark (buccal corridor).
    # A stretched fear mouth (AU20) bares the lower teeth more than the upper ones; a jaw that
    # drops with relaxed lips (AU26 without AU20, surprise) leaves the upper lip over most of
    # the upper teeth.
    show_up = 1.9 * (1.0 - 0.6 * a[20] - 0.5 * a[26] * (1.0 - a[20]))
    # Lips stretched sideways (AU20) bare the teeth further back, to the premolars, so the dark
    # corridor at each corner of the opening stays narrow.
    teeth = vmax(d_open, v - ui - show_up, (np.abs(s) - 0.78 - 0.12 * a[20]) * w)
    p.paint(coverage(teeth), TEETH)
    lower_show = np.clip(a[16] + a[20] + 0.6 * a[10], 0.0, 1.0)
    low_teeth = vmax(d_open, li - 1.3 - v, (np.abs(s) - 0.7 - 0.15 * a[20]) * w)
    p.paint(lower_show * coverage(low_teeth), TEETH)
    gap = li - ui
    tongue = ellipse_sdf(u, v, 0.0, li - 0.15 * gap, 0.6 * w, 0.3 * gap + 0.01)
    p.paint(np.clip(a[26], 0, 1) * open_cov * coverage(tongue, 1.5), TONGUE)


def _forehead(cv: Canvas, ident: Identity, a: dict) -> None:
    """Horizontal forehead lines (AU1, AU2) and vertical glabella lines (AU4)."""
    skin = np.asarray(ident.skin, np.float32)
    brow_v = ident.eye_v - ident.brow_gap
    half = ident.eye_sep + 2.0
    p = cv.patch(-half, half, brow_v - 11.0, brow_v + 5.0)
    raised = np.clip(a[1] + a[2], 0.0, 1.0)
    # AU1 alone wrinkles only the middle of the forehead; AU2 extends the lines sideways.
    length = 2.5 + 2.5 * a[1] + 0.6 * ident.eye_sep * a[2]
    # AU1 against AU4 (the "grief muscles" of sadness, also in fear) bunches the middle of the
    # forehead into deeper lines that arch up in the centre: the omega (horseshoe) of sadness.
    grief = a[1] * a[4]
    for k in range(3):
        bump = (0.7 * a[1] + 0.8 * grief) * np.clip(1 - (p.u / length) ** 2, 0, 1)
        y = brow_v - 5.0 - 1.9 * k - bump
        line = np.maximum(np.abs(p.v - y) - 0.3, np.abs(p.u) - length)
        p.paint((0.5 * raised + 0.35 * grief) * coverage(line, 1.5), skin * 0.65)
    # AU4's corrugator pulls the brow heads together and down: deep vertical furrows between
    # them (two a side at full strength) and, from the procerus, a transverse line at the root
    # of the nose. They are drawn dark because FER-style classifiers see luminance only. The
    # furrows follow the brow heads down (see _brow).
    low = brow_v + 2.2 * a[4] * (1.0 - 0.5 * a[1])
    for sgn in (-1.0, 1.0):
        for k, (du, dv) in enumerate(((1.0, -2.4), (2.1, -1.6))):
            crease = segment_sdf(
                p.u, p.v, sgn * du, low + dv, sgn * (du - 0.5), low + 1.2 - 0.5 * k
            )
            # With AU1 the furrows are short and faint (the brow heads are pulled up, not down).
            depth = (0.85 - 0.3 * k) * a[4] * (1.0 - 0.6 * a[1])
            p.paint(depth * coverage(crease - 0.3, 1.3), skin * 0.5)
    nasion = np.maximum(np.abs(p.v - low - 2.2 - 0.1 * p.u * p.u) - 0.3, np.abs(p.u) - 1.4)
    p.paint(0.6 * a[4] * (1.0 - 0.6 * a[1]) * coverage(nasion, 1.3), skin * 0.55)


def _brow(cv: Canvas, ident: Identity, a: dict, sgn: float) -> None:
    """One eyebrow as a tapered thick curve; t runs from its inner (0) to outer (1) end."""
    brow_v = ident.eye_v - ident.brow_gap
    inner = ident.brow_in - 1.5 * a[4] - 0.3 * a[9]  # AU4 (and AU9) draw the brows together
    length = ident.brow_len
    lo, hi = sorted((sgn * (ident.brow_in - 1.5), sgn * (ident.brow_in + length + 1.5)))
    p = cv.patch(lo, hi, brow_v - MAX_BROW_RAISE - 3.0, brow_v + 4.0)
    t = (sgn * p.u - inner) / length
    tc = np.clip(t, 0.0, 1.0)
    a1, a2, a4, a9 = a[1], a[2], a[4], a[9]
    arch = ident.brow_arch + 0.9 * a2 * a1  # AU1+2 together give the high arched brow
    # AU4 lowers the inner end more (the V of anger); with AU1 the inner end is held up.
    low4 = 3.8 * a4 * (1.0 - 0.5 * a1)
    y = (
        brow_v
        - 4.0 * arch * tc * (1 - tc)
        + ident.brow_tilt * (tc - 0.5)
        - 3.6 * a1 * (1 - tc) ** 1.3
        - 3.4 * a2 * (0.25 + 0.75 * tc)
        + low4 * (1.0 - 0.6 * tc)
        + 1.2 * a9 * (1 - tc)
    )
    dy_dt = (
        -4.0 * arch * (1 - 2 * tc)
        + ident.brow_tilt
        + 3.6 * 1.3 * a1 * (1 - tc) ** 0.3
        - 3.4 * 0.75 * a2
        - 0.6 * low4
        - 1.2 * a9
    )
    slope = dy_dt / length
    half_th = 0.5 * ident.brow_thick * (1.0 - 0.45 * tc) * (1.0 + 0.4 * a4)
    d = np.abs(p.v - y) / np.sqrt(1.0 + slope * slope) - half_th
    d = np.maximum(d, np.maximum(-t, t - 1.0) * length)
    # A lowered brow (AU4, AU9) shades the upper lid beneath it.
    shade = np.maximum(np.abs(p.v - y - 2.0) - 1.6, np.maximum(-t, t - 1.0) * length + 0.5)
    p.paint(0.7 * np.clip(a4 + 0.5 * a9, 0, 1) * coverage(shade, 2.5), skin_shadow(ident) * 0.8)
    # Brows are darker and less saturated than the scalp hair.
    brow = 0.6 * np.asarray(ident.hair, np.float32) + 0.4 * np.array([0.2, 0.15, 0.11])
    # Knitted brows bunch up and look darker (the hairs crowd together).
    p.paint(0.95 * coverage(d), brow * (1.0 - 0.35 * a4[..., None]))


def _eye(cv: Canvas, ident: Identity, a: dict, sgn: float, active: dict) -> None:
    """One eye: almond opening between two parabolic lids, iris, pupil, lashes, lid creases."""
    skin = np.asarray(ident.skin, np.float32)
    cu, cy, eh = sgn * ident.eye_sep, ident.eye_v, ident.eye_h
    a5, a6, a7, a9, blink = a[5], a[6], a[7], a[9], a[45]
    w = ident.eye_w * (1.0 + 0.08 * a5 - 0.06 * a6)
    h_lo = eh * np.maximum(0.8 + 0.15 * a5 - 0.45 * a7 - 0.45 * a6 - 0.3 * a9, 0.15)
    h_up = eh * np.maximum(1.0 + 1.1 * a5 - 0.45 * a7 - 0.35 * a6 - 0.3 * a[4] - 0.35 * a9, 0.2)
    # AU64 (eyes down): the upper lid follows the gaze down.
    h_up = h_up - 0.3 * eh * a[64]
    # A blink (AU45) or eye closure (AU43; partial: drooping lids) brings the upper lid down to
    # the lower one.
    close = np.clip(blink + a[43], 0.0, 1.0)
    h_up = h_up * (1.0 - close) - h_lo * close
    p = cv.patch(
        cu - 1.2 * ident.eye_w - 3.0,
        cu + 1.2 * ident.eye_w + 3.0,
        cy - 2.2 * eh - 2.5,
        cy + 2.2 * eh + 3.5,
    )
    u, v = p.u, p.v
    if active[4]:
        # The lowered brow (AU4) overhangs the eye and puts the whole socket in shadow; AU1
        # holds the brow heads up (sadness, fear), so then the brow does not overhang.
        socket = ellipse_sdf(u, v, cu - sgn * 0.5, cy - 0.9, ident.eye_w + 1.6, eh + 1.8)
        p.paint(0.55 * a[4] * (1.0 - a[1]) * coverage(socket, 3.0), skin * 0.5)
    s = (u - cu) / w
    base = 1.0 - s * s
    # AU1 without AU2 (sadness) pulls up the inner half of the upper lid and lets the outer
    # half droop: the oblique "triangular" lid of grief.
    oblique = np.clip(a[1] - a[2], 0.0, 1.0)
    lid = 1.0 + 0.45 * oblique * (-sgn * s) - 0.2 * oblique
    # AU64: the iris sits low in the opening.
    gaze = 0.45 * eh * a[64]
    y_up, y_lo = cy - h_up * base * lid, cy + h_lo * base
    ends = (np.abs(s) - 1.0) * w
    opening = coverage(np.maximum(y_up - v, v - y_lo))
    p.paint(opening, SCLERA)
    iris = np.hypot(u - cu, v - cy - 0.15 - gaze)
    p.paint(opening * coverage(iris - ident.iris_r), ident.iris)
    p.paint(opening * coverage(iris - 0.45 * ident.iris_r), (0.03, 0.03, 0.03))
    glint = np.hypot(u - cu + 0.4 * ident.iris_r, v - cy - gaze + 0.4 * ident.iris_r) - 0.35
    p.paint(0.8 * opening * coverage(glint), (1.0, 1.0, 1.0))
    lash = np.maximum(np.abs(v - y_up) - 0.35 - 0.2 * np.clip(sgn * s, 0, 1), ends - 0.3)
    p.paint(0.95 * coverage(lash), LASHES)
    lower = np.maximum(np.abs(v - y_lo) - 0.22, ends)
    p.paint(0.45 * coverage(lower), skin * 0.6)
    # Lid crease above the eye; AU5 retracts the lid into it, so it fades.
    crease = np.maximum(
        np.abs(v - (cy - (eh * 1.1 + 1.2) * np.sqrt(np.clip(base, 0, 1)))) - 0.25, ends
    )
    p.paint((0.3 - 0.2 * a5) * coverage(crease, 1.3), skin * 0.62)
    if active[6] or active[7] or active[9]:
        # Lower-lid bulge / infraorbital furrow of AU6 and AU7, and of AU9, which pushes the
        # infraorbital triangle up.
        bulge = np.maximum(np.abs(v - y_lo - 1.1 * np.clip(base, 0, 1) - 0.3) - 0.25, ends)
        p.paint(0.5 * np.maximum(np.maximum(a6, a7), 0.8 * a9) * coverage(bulge, 1.5), skin * 0.65)
    if active[6]:
        # Crow's feet fanning out from the outer corner.
        ou = cu + sgn * (w + 0.6)
        for k in (-1.0, 0.0, 1.0):
            line = segment_sdf(u, v, ou, cy + 0.7 * k, ou + sgn * 2.0, cy + 1.4 * k) - 0.25
            p.paint(0.55 * a6 * coverage(line, 1.3), skin * 0.62)
