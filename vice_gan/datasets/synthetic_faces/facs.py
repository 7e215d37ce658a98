"""FACS action units, EMFACS emotion prototypes and MUG-like expression timelines.

The `au` feature of `synthetic_faces` is a float32 [T, NUM_AUS] array whose columns follow
`AUS`; every value is an intensity in [0, 1] (0 absent, 1 the strongest this renderer draws,
roughly FACS intensity E). AU45 (blink) is not part of any prototype: blinks are added on top.

Prototypes follow EMFACS (Friesen & Ekman, 1983) as used by the project's design card:
happiness 6+12(+25), sadness 1+4+15+17 (+43 drooping lids, +64 gaze down), surprise 1+2+5+26,
fear 1+2+4+5+7+20+26 (+15), anger 4+5+7+9+10+15+17+23, disgust 4+7+9+10+15+16+25. Anger, disgust
and fear add the AUs of EMFACS variants (or AUs common in posed expressions) that make the
thesis's FER-2013 classifier recognise the rendered apex far more often
(data_prep/fer_realism.py). Timelines follow MUG's capture protocol (Aifanti et al., 2010): each
take starts and ends neutral, with onset -> apex -> offset in between.
"""

import dataclasses

import numpy as np

from vice_gan import labels

# FACS action units carried per frame, in column order of the `au` feature.
AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 10, 12, 15, 16, 17, 20, 23, 25, 26, 43, 45, 64)
NUM_AUS: int = len(AUS)
AU_NAMES: dict[int, str] = {
    1: "inner brow raiser",
    2: "outer brow raiser",
    4: "brow lowerer",
    5: "upper lid raiser",
    6: "cheek raiser",
    7: "lid tightener",
    9: "nose wrinkler",
    10: "upper lip raiser",
    12: "lip corner puller",
    15: "lip corner depressor",
    16: "lower lip depressor",
    17: "chin raiser",
    20: "lip stretcher",
    23: "lip tightener",
    25: "lips part",
    26: "jaw drop",
    43: "eyes closure (partial: drooping upper lids)",
    45: "blink",
    64: "eyes turn down",
}
BLINK_AU: int = 45


@dataclasses.dataclass(frozen=True)
class ProtoAU:
    """One action unit of an emotion prototype.

    Attributes:
      au: FACS number.
      weight: apex intensity relative to the take's intensity.
      prob: probability that a take includes this AU (optional AUs of EMFACS are < 1).
    """

    au: int
    weight: float
    prob: float = 1.0


# EMFACS prototypes, keyed by emotion name (vice_gan.labels.EMOTIONS). Weights are chosen so
# that the rendered apex reads as the emotion at 64x64: the defining AUs are at full weight.
PROTOTYPES: dict[str, tuple[ProtoAU, ...]] = {
    # Anger 4+5+7+23 with the snarl of EMFACS's 4+5+7+10+23 variant and a wrinkled nose (AU9,
    # frequent in posed anger): lowered, knitted brows over tightened lids, raised upper lip,
    # and the chin raiser AU17 with AU15 pressing the lower lip up and turning the mouth down.
    # With 4+5+7+23 alone the FER-2013 classifier saw a neutral face (0 of 100 apex frames
    # angry); with 9, 10, 15 and 17 it labels far more of them anger.
    "anger": (
        ProtoAU(4, 1.0),
        ProtoAU(5, 0.4),
        ProtoAU(7, 1.0),
        ProtoAU(9, 1.0),
        ProtoAU(10, 0.8),
        ProtoAU(15, 0.8),
        ProtoAU(17, 0.6),
        ProtoAU(23, 0.8),
    ),
    # Disgust 9+15+16 and 10+16+25 of EMFACS together: the nose wrinkled and shortened (which
    # also raises the cheeks and narrows the eyes from below), the upper lip raised off the
    # upper teeth, the lower lip pulled down off the lower ones, the corners of the mouth down,
    # the lips apart. The brows come down with the nose wrinkle and the lids tighten (AU4 and
    # AU7 are common in posed disgust). Without 4, 7 and 25 the classifier never labelled an
    # apex frame disgust; it is the rarest class of its training set.
    "disgust": (
        ProtoAU(4, 0.6),
        ProtoAU(7, 0.8),
        ProtoAU(9, 1.0),
        ProtoAU(10, 1.0),
        ProtoAU(15, 1.0),
        ProtoAU(16, 0.8),
        ProtoAU(25, 1.0),
    ),
    # Fear 1+2+4+5+7+20+26: brows raised but drawn together and flattened (AU4 as strong as AU1,
    # AU2 weaker: unlike surprise's high arch), wide eyes whose lower lids are tensed (AU7),
    # stretched open mouth, whose corners the tensed lower face (AU15, with the platysma) pulls
    # down into a grimace; without AU15 the stretched lips baring the teeth read as a grin.
    "fear": (
        ProtoAU(1, 1.0),
        ProtoAU(2, 0.5),
        ProtoAU(4, 1.0),
        ProtoAU(5, 1.0),
        ProtoAU(7, 0.8),
        ProtoAU(15, 0.5),
        ProtoAU(20, 1.0),
        ProtoAU(26, 0.5),
    ),
    # Happiness 6+12, usually 25 too (Duchenne smile, mostly with parted lips in MUG).
    "happiness": (ProtoAU(6, 0.9), ProtoAU(12, 1.0), ProtoAU(25, 0.9, 0.85)),
    # Sadness 1+4+15+17 (EMFACS 1+4+15 and 1+4+15+17): oblique brows (inner corners up), the
    # corners of the mouth down and the chin raised, which pushes the lower lip up into a
    # pout; the upper lids droop (AU43 at low intensity) and the gaze goes down (AU64).
    "sadness": (
        ProtoAU(1, 0.8),
        ProtoAU(4, 0.7),
        ProtoAU(15, 1.0),
        ProtoAU(17, 0.9),
        ProtoAU(43, 0.6),
        ProtoAU(64, 0.8),
    ),
    # Surprise 1+2+5+26: high arched brows, wide eyes, dropped jaw.
    "surprise": (ProtoAU(1, 1.0), ProtoAU(2, 1.0), ProtoAU(5, 1.0), ProtoAU(26, 1.0)),
}


def au_column(au: int) -> int:
    """Column of FACS action unit `au` in the `au` feature (raises ValueError if absent)."""
    return AUS.index(au)


def prototype_vector(emotion: int) -> np.ndarray:
    """Apex AU intensities of an emotion's prototype with every optional AU present.

    Args:
      emotion: label index (vice_gan.labels.ALL_LABELS); neutral gives all zeros.

    Returns:
      float32 [NUM_AUS].
    """
    vec = np.zeros(NUM_AUS, np.float32)
    if emotion != labels.NEUTRAL_LABEL:
        for p in PROTOTYPES[labels.EMOTIONS[emotion]]:
            vec[au_column(p.au)] = p.weight
    return vec


def _ramp(t: np.ndarray, start: float, end: float) -> np.ndarray:
    """Smoothstep from 0 at `start` to 1 at `end` (muscle onsets are smooth, not linear)."""
    x = np.clip((t - start) / max(end - start, 1e-6), 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def expression_envelope(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """A MUG-like neutral -> onset -> apex -> offset -> neutral envelope.

    Phase lengths are drawn as fractions of the take (neutral lead-in 6-16 %, onset 12-20 %,
    apex 25-35 %, offset 12-20 %, the rest neutral), so the apex is always mid-take and the
    first and last frames are exactly neutral.

    Args:
      rng: random generator of the take.
      num_frames: T.

    Returns:
      float32 [T] in [0, 1].
    """
    lead, onset, apex, offset = rng.uniform((0.06, 0.12, 0.25, 0.12), (0.16, 0.20, 0.35, 0.20))
    t = np.arange(num_frames, dtype=np.float64) / max(num_frames - 1, 1)
    a0, a1 = lead, lead + onset
    b0, b1 = a1 + apex, a1 + apex + offset
    return (_ramp(t, a0, a1) * (1.0 - _ramp(t, b0, b1))).astype(np.float32)


def blink_track(rng: np.random.Generator, num_frames: int, allowed: np.ndarray) -> np.ndarray:
    """AU45 intensities of spontaneous blinks.

    Blinks come every 35-90 frames (about 2-5 s at MUG's 19 fps) and last 5-7 frames with a fast
    close and a slower reopening. They are kept out of the first and last 3 frames and out of
    frames where `allowed` is False (the apex, so that apex frames show the open-eyed expression).

    Args:
      rng: random generator of the take.
      num_frames: T.
      allowed: bool [T], where a blink may happen.

    Returns:
      float32 [T] in [0, 1].
    """
    track = np.zeros(num_frames, np.float32)
    t = int(rng.integers(4, 40))
    while t < num_frames - 3:
        length = int(rng.integers(5, 8))
        profile = np.sin(np.pi * np.linspace(0, 1, length + 2)[1:-1] ** 0.7)
        span = slice(t, min(t + length, num_frames - 3))
        if np.all(allowed[span]):
            track[span] = profile[: span.stop - span.start]
        t += int(rng.integers(35, 90))
    return track


def au_timeline(
    rng: np.random.Generator, emotion: int, num_frames: int, intensity: float | None = None
) -> np.ndarray:
    """Per-frame AU intensities of one take.

    Each prototype AU (optional ones with their EMFACS probability) gets the take's envelope,
    scaled by the take intensity (U(0.75, 1) unless given) times a per-AU factor U(0.85, 1.1),
    shifted by a per-AU lag of up to 2 frames (muscles do not start in lockstep). The neutral
    take has all AUs at 0; every take gets blinks outside its apex.

    Args:
      rng: random generator of the take.
      emotion: label index 0-5, or vice_gan.labels.NEUTRAL_LABEL.
      num_frames: T (>= 16).
      intensity: overall apex intensity in (0, 1]; random when None.

    Returns:
      float32 [T, NUM_AUS] in [0, 1], columns in `AUS` order.
    """
    au = np.zeros((num_frames, NUM_AUS), np.float32)
    env = expression_envelope(rng, num_frames)
    if intensity is None:
        intensity = float(rng.uniform(0.75, 1.0))
    if emotion != labels.NEUTRAL_LABEL:
        for p in PROTOTYPES[labels.EMOTIONS[emotion]]:
            include, gain, lag = rng.random() < p.prob, rng.uniform(0.85, 1.1), rng.integers(-2, 3)
            if include:
                shifted = np.roll(env, int(lag))
                # np.roll wraps around; the envelope is 0 at both ends, so re-zero the wrap.
                if lag > 0:
                    shifted[:lag] = 0.0
                elif lag < 0:
                    shifted[lag:] = 0.0
                au[:, au_column(p.au)] = p.weight * intensity * gain * shifted
    au[:, au_column(BLINK_AU)] = blink_track(rng, num_frames, env < 0.3)
    return np.clip(au, 0.0, 1.0)


def apex_frame(au: np.ndarray) -> int:
    """Index of the frame with the strongest expression that is not mid-blink.

    Args:
      au: float32 [T, NUM_AUS].

    Returns:
      Frame index; for a neutral take, the middle frame among those without a blink.
    """
    blink = au[:, au_column(BLINK_AU)]
    strength = np.delete(au, au_column(BLINK_AU), axis=1).sum(axis=1)
    score = strength - 10.0 * blink
    if strength.max() <= 0.0:
        # Neutral take: prefer the centre, away from blinks.
        centre = -np.abs(np.arange(len(au)) - len(au) // 2) * 1e-3
        score = centre - 10.0 * blink
    return int(np.argmax(score))
