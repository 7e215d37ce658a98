"""Emotion label set shared by every data set, model and metric.

The six generated emotions come first, in the alphabetical order MUG's folders use; the
neutral take (an identity source, never a generation target, thesis §5.1) is label 6.
"""

EMOTIONS: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
NUM_EMOTIONS: int = len(EMOTIONS)
NEUTRAL: str = "neutral"
NEUTRAL_LABEL: int = NUM_EMOTIONS
# Names of the TFDS ClassLabel feature `emotion`: the six emotions, then neutral.
ALL_LABELS: tuple[str, ...] = EMOTIONS + (NEUTRAL,)


def emotion_index(name: str) -> int:
    """Index of an emotion name in `ALL_LABELS` (0-5 emotions, 6 neutral).

    Raises:
      ValueError: the name is not one of `ALL_LABELS`, with the valid names listed.
    """
    try:
        return ALL_LABELS.index(name.strip().lower())
    except ValueError:
        raise ValueError(
            f"unknown emotion {name!r}; expected one of {', '.join(ALL_LABELS)}"
        ) from None
