"""Data sets (TFDS builders, no TensorFlow needed) and the input pipeline."""
