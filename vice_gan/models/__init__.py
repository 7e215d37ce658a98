"""Networks of VICE-GAN: content autoencoders, motion GRU, generator and the two discriminators."""

from vice_gan.models import autoencoder, discriminators, generator, layers, motion

__all__ = ["autoencoder", "discriminators", "generator", "layers", "motion"]
