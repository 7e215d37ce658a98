"""Identities of synthetic_faces subjects: the attributes that make one face differ from another.

An `Identity` is a frozen set of numbers (lengths in face units, colours as RGB in
[0, 1]); `sample_identity` draws one from a random generator. About twenty independent attributes
(face shape, skin, hair style and colour, eyes, brows, nose, mouth, glasses, beard, background,
clothing) make 50 subjects distinct while leaving neighbours similar enough that identity is not
trivially readable from one attribute.
"""

import dataclasses

import numpy as np

RGB = tuple[float, float, float]

# Skin tones from light to dark; a subject's tone is a random point on this polyline.
SKIN_TONES = np.array(
    [
        [0.98, 0.86, 0.76],
        [0.93, 0.76, 0.63],
        [0.80, 0.60, 0.45],
        [0.60, 0.42, 0.29],
        [0.40, 0.27, 0.18],
    ]
)
# Palettes with the probability of each entry (roughly how common it is).
HAIR_COLOURS = np.array(
    [
        [0.07, 0.06, 0.06],  # black
        [0.20, 0.13, 0.09],  # dark brown
        [0.40, 0.26, 0.15],  # brown
        [0.55, 0.27, 0.12],  # auburn
        [0.82, 0.67, 0.40],  # blond
        [0.62, 0.61, 0.60],  # grey
    ]
)
HAIR_COLOUR_P = (0.3, 0.25, 0.17, 0.07, 0.13, 0.08)
IRIS_COLOURS = np.array(
    [
        [0.30, 0.18, 0.09],  # brown
        [0.45, 0.33, 0.15],  # hazel
        [0.25, 0.45, 0.70],  # blue
        [0.30, 0.50, 0.35],  # green
        [0.45, 0.50, 0.55],  # grey
    ]
)
IRIS_COLOUR_P = (0.55, 0.12, 0.17, 0.08, 0.08)
HAIR_STYLES = ("short", "long", "bald", "fringe", "curly", "bun")
HAIR_STYLE_P = (0.3, 0.2, 0.08, 0.14, 0.14, 0.14)
BEARDS = ("none", "stubble", "moustache", "goatee", "full")
BEARD_P = (0.6, 0.1, 0.1, 0.1, 0.1)
GLASSES = ("none", "round", "square")
GLASSES_P = (0.76, 0.12, 0.12)


@dataclasses.dataclass(frozen=True)
class Identity:
    """One subject's appearance. Lengths are in face units (canvas.ZOOM pixels of the frame).

    Face-local coordinates (u, v) have their origin at the face centre (x = 32, y = face_cy),
    u to the right of the image and v downwards; feature positions are given in them.
    """

    face_cy: float  # image row of the face centre
    face_w: float  # half width of the face at cheekbone level
    face_top: float  # centre-to-crown distance (forehead height)
    face_bot: float  # centre-to-chin distance
    jaw: float  # superellipse exponent of the lower face: 2 round ... 3.5 square jaw
    skin: RGB
    hair_style: str  # one of HAIR_STYLES
    hair: RGB
    hair_volume: float  # how far the hair stands out from the skull
    hairline: float  # v of the hairline at the centre (negative: above the face centre)
    parting: float  # -1..1, side parting asymmetry
    eye_v: float
    eye_sep: float  # half distance between the eye centres
    eye_w: float  # half width of the eye opening
    eye_h: float  # half height of the open eye
    iris: RGB
    iris_r: float
    brow_gap: float  # brow height above the eye centre
    brow_in: float  # u of the brow's inner end
    brow_len: float
    brow_thick: float
    brow_arch: float
    brow_tilt: float  # outer end lower (+) or higher (-)
    nose_v: float  # v of the nose tip
    nose_w: float  # half width of the nostrils
    mouth_v: float
    mouth_w: float  # half width of the mouth
    lip_up: float  # upper lip thickness
    lip_lo: float  # lower lip thickness
    lips: RGB
    ear_size: float
    glasses: str  # one of GLASSES
    frame: RGB  # glasses frame colour
    beard: str  # one of BEARDS
    background: RGB
    shirt: RGB


def _pick(rng: np.random.Generator, palette: np.ndarray, p, jitter: float) -> RGB:
    """A palette colour (entry i with probability p[i]) with per-channel jitter, in [0, 1]."""
    colour = palette[rng.choice(len(palette), p=p)] + rng.normal(0.0, jitter, 3)
    return tuple(float(c) for c in np.clip(colour, 0.0, 1.0))


def _skin(rng: np.random.Generator) -> RGB:
    """A skin tone: a uniform point on the SKIN_TONES polyline, lightly jittered."""
    x = rng.uniform(0, len(SKIN_TONES) - 1)
    i = min(int(x), len(SKIN_TONES) - 2)
    tone = SKIN_TONES[i] + (x - i) * (SKIN_TONES[i + 1] - SKIN_TONES[i])
    return tuple(float(c) for c in np.clip(tone + rng.normal(0.0, 0.015, 3), 0.0, 1.0))


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draws one subject's appearance.

    Args:
      rng: random generator of the subject (same generator state, same identity).

    Returns:
      An `Identity`.
    """
    u = rng.uniform
    skin = _skin(rng)
    hair = _pick(rng, HAIR_COLOURS, HAIR_COLOUR_P, 0.03)
    face_w = u(14.5, 17.5)
    face_top = u(19.0, 22.0)
    eye_v = u(-4.0, -2.0)
    eye_h = u(1.6, 2.1)
    brow_gap = u(3.8, 4.8)
    hair_style = HAIR_STYLES[rng.choice(len(HAIR_STYLES), p=HAIR_STYLE_P)]
    # A fringe must stay above the highest brow raise (AU1+2 lift the brows ~3.5 px).
    hairline = eye_v - brow_gap - u(5.5, 7.0) if hair_style == "fringe" else u(-16.5, -12.5)
    mouth_v = u(10.5, 12.5)
    # Lips: skin shifted towards red and darkened, so they read on every skin tone.
    lips = np.clip(np.array(skin) * u(0.62, 0.8) + np.array([0.16, 0.0, 0.02]), 0, 1)
    beard = BEARDS[rng.choice(len(BEARDS), p=BEARD_P)]
    glasses = GLASSES[rng.choice(len(GLASSES), p=GLASSES_P)]
    frames = np.array([[0.08, 0.08, 0.1], [0.45, 0.3, 0.15], [0.7, 0.7, 0.72]])
    frame = _pick(rng, frames, (0.5, 0.3, 0.2), 0.03)
    background = tuple(float(c) for c in np.clip(u(0.55, 0.85) + rng.normal(0, 0.06, 3), 0, 1))
    shirt = tuple(float(c) for c in rng.uniform(0.1, 0.8, 3))
    return Identity(
        face_cy=u(31.0, 33.0),
        face_w=face_w,
        face_top=face_top,
        face_bot=u(17.5, 20.5),
        jaw=u(2.0, 3.5),
        skin=skin,
        hair_style=hair_style,
        hair=hair,
        hair_volume=u(1.0, 3.5),
        hairline=hairline,
        parting=u(-1.0, 1.0),
        eye_v=eye_v,
        eye_sep=u(6.6, 8.2),
        eye_w=u(3.2, 4.0),
        eye_h=eye_h,
        iris=_pick(rng, IRIS_COLOURS, IRIS_COLOUR_P, 0.03),
        iris_r=eye_h * u(1.1, 1.25),
        brow_gap=brow_gap,
        brow_in=u(1.8, 3.0),
        brow_len=u(7.0, 9.0),
        brow_thick=u(1.4, 2.4),
        brow_arch=u(0.0, 1.3),
        brow_tilt=u(-0.8, 0.8),
        nose_v=u(4.5, 6.5),
        nose_w=u(2.0, 3.0),
        mouth_v=mouth_v,
        mouth_w=u(5.0, 6.8),
        lip_up=u(1.0, 1.8),
        lip_lo=u(1.3, 2.3),
        lips=tuple(float(c) for c in lips),
        ear_size=u(0.85, 1.15),
        glasses=glasses,
        frame=frame,
        beard=beard,
        background=background,
        shirt=shirt,
    )
