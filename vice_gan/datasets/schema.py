"""The one example schema every vice-gan TFDS builder writes.

Each example is one video take of one subject showing one emotion (or the neutral take):

  frames      uint8 [T, 64, 64, 3]   RGB, T varies per take (zlib-compressed tensor; the
                                     TFDS Video feature would need TensorFlow)
  num_frames  int32                  T
  subject     int32                  dense subject index 0..S-1 within the data set
  subject_name  text                 the data set's own subject id (e.g. MUG '001')
  emotion     ClassLabel(ALL_LABELS) 0-5 the six emotions, 6 neutral (vice_gan.labels)
  take        int32                  take index within (subject, emotion), from 0
  take_name   text                   the data set's own take id (e.g. 'take001end')

synthetic_faces adds `au`: float32 [T, NUM_AUS] per-frame FACS action-unit intensities.
Builders write ArrayRecord files; readers use `tfds.data_source`, never TensorFlow.
"""

import numpy as np
import tensorflow_datasets as tfds

from vice_gan import labels

IMAGE_SIZE = 64


def video_features(extra: dict | None = None) -> tfds.features.FeaturesDict:
    """The FeaturesDict of the shared schema, plus builder-specific `extra` features."""
    feats = {
        "frames": tfds.features.Tensor(
            shape=(None, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8, encoding="zlib"
        ),
        "num_frames": np.int32,
        "subject": np.int32,
        "subject_name": tfds.features.Text(),
        "emotion": tfds.features.ClassLabel(names=list(labels.ALL_LABELS)),
        "take": np.int32,
        "take_name": tfds.features.Text(),
    }
    feats.update(extra or {})
    return tfds.features.FeaturesDict(feats)
