"""Motion network R_m: a one-layer GRU turning per-step noise into motion codes (MoCoGAN).

All randomness (initial state and per-step noise) is drawn by the caller, outside the sharded
step, so the module is deterministic given its inputs and 1 vs N devices agree.
"""

import jax
import jax.numpy as jnp
from flax import linen as nn

from vice_gan.models import layers


class MotionNet(nn.Module):
    """R_m: GRU(hidden) run over T steps from a given initial state; z_m[t] = h_t.

    Flax's GRUCell has the same gates as PyTorch's GRUCell (n = tanh(W_in x + b_in +
    r * (W_hn h + b_hn))); its r/z gates carry one bias instead of PyTorch's redundant two.

    Attributes:
        hidden: GRU state size = motion code size (thesis: 10).
        dtype: computation dtype (parameters stay float32).
    """

    hidden: int = 10
    dtype: layers.Dtype = jnp.float32

    @nn.compact
    def __call__(self, h0: jax.Array, inputs: jax.Array) -> jax.Array:
        """Runs the GRU.

        Args:
            h0: [B, hidden] initial state (N(0, I) noise in training).
            inputs: [B, T, D_in] per-step inputs: N(0, I) noise, optionally with a one-hot
                category concatenated by the caller (label fed to R_m, MoCoGAN-style).

        Returns:
            [B, T, hidden] float32 motion codes, z_m[:, t] = h_t (h_0 itself is not emitted).
        """
        # Created here, the cell's parameters live under params['gru'] (the RNN wrapper has none).
        cell = nn.GRUCell(features=self.hidden, dtype=self.dtype, name="gru")
        z_m = nn.RNN(cell)(inputs, initial_carry=h0.astype(self.dtype))
        return z_m.astype(jnp.float32)
