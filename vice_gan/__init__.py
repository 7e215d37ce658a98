"""vice-gan: a JAX/Flax reimplementation of VICE-GAN (identity-consistent emotion video GAN)."""

__version__ = "0.1.0"
