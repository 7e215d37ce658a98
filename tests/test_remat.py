"""`remat`: the wrappers that steer what the gradients keep leave values and gradients as they
were. That they keep less is checked on the whole step (tests/test_steps.py,
test_recomputed_activations_match_kept_and_need_less_scratch): in a function of G alone XLA
already recomputes those activations itself."""

import jax
import jax.numpy as jnp
import numpy as np

from vice_gan.models import generator as generator_lib
from vice_gan.models import remat


def _tiny_generator():
    gen = generator_lib.Generator(ngf=8)
    z = jax.random.normal(jax.random.key(0), (64, 66))
    variables = gen.init(jax.random.key(1), z, train=False)
    return gen, variables, z


def _g_loss(apply):
    """Loss of G's frames in train mode, weighted so that every pixel's gradient differs."""

    def loss(variables, z):
        frames, updates = apply(variables, z)
        weights = jnp.linspace(-1.0, 1.0, frames.size).reshape(frames.shape)
        return jnp.sum(weights * frames), updates["batch_stats"]

    return loss


def _plain_and_recomputed():
    gen, variables, z = _tiny_generator()

    def apply(v, z):
        return gen.apply(v, z, train=True, mutable=["batch_stats"])

    recomputed = remat.recompute_in_backward(apply, generator_lib.KEEP_FOR_BACKWARD)
    return (_g_loss(apply), _g_loss(recomputed)), variables, z


def test_after_keeps_values_and_leaves_integers_alone():
    x = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(remat.after(x, jnp.float32(7.0)), x)
    ints = jnp.arange(3)
    assert remat.after(ints, jnp.float32(7.0)) is ints


def test_generator_recomputed_in_backward_equals_plain_gradient():
    (plain, recomputed), variables, z = _plain_and_recomputed()
    grad = jax.jit(jax.value_and_grad(plain, argnums=(0, 1), has_aux=True))
    grad_rc = jax.jit(jax.value_and_grad(recomputed, argnums=(0, 1), has_aux=True))
    (loss, stats), grads = grad(variables, z)
    (loss_rc, stats_rc), grads_rc = grad_rc(variables, z)
    np.testing.assert_allclose(loss_rc, loss, rtol=1e-5)
    got, want = jax.tree.leaves((stats_rc, grads_rc)), jax.tree.leaves((stats, grads))
    for a, b in zip(got, want, strict=True):
        # float32 rounding, relative to each leaf's scale (recomputed values fuse differently).
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))
    # Not vacuous: the gradients reach every parameter and the latents.
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads[0]["params"]))
    assert float(jnp.abs(grads[1]).max()) > 0
