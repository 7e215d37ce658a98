"""Pure train steps of both stages, written per shard (see `parallel.py`), plus their noise.

`make_ae_step` and `make_gan_step` return `step(state, batch) -> (state, metrics)`: pure,
deterministic given the batch (all randomness is drawn outside by `sample_*_noise` and arrives
as batch entries, sharded like data, so 1 and N devices agree), every cross-example reduction
over `parallel.AXIS`. Wrap them with `parallel.shard_step` to run.

GAN step = one MoCoGAN iteration (thesis §4.3.5, DESIGN.md): update D_I, then D_V, then
G + R_m (+ the encoder when fine-tuning). With `reuse_fakes` the fakes are rendered once: the
generator does not change between the discriminator updates and its own, so the G update
differentiates the same render (kept as a `jax.vjp`) against the *updated* discriminators.
That is the same estimator as a second render with fresh noise, one render cheaper.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from vice_gan import labels, losses, parallel
from vice_gan.config import Config
from vice_gan.models import generator as generator_lib
from vice_gan.models import remat
from vice_gan.state import CODE_DIM, IMAGE_SHAPE, MOTION_DIM, AeState, GanState, Models

PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
Batch = dict[str, jax.Array]


# --- Noise (drawn outside the sharded step) -----------------------------------------------------
def sample_ae_noise(key: jax.Array, batch_size: int) -> Batch:
    """VAE reparameterisation noise 'eps' [B, 50] (unused by the SAE)."""
    return {"eps": jax.random.normal(key, (batch_size, CODE_DIM))}


def sample_gan_noise(key: jax.Array, config: Config) -> Batch:
    """All randomness of one GAN step, with a leading global-batch axis on every entry.

    Returns:
      h0 [Bv, 10], eps [Bv, T, 10]: R_m's initial state and per-step input noise, N(0, I);
      cats int32 [Bv]: requested emotions ~ U{0..5}; img_t int32 [Bi]: which frame of its
      source fake clip each D_I image is. Without `reuse_fakes` the same four again with a
      '_g' suffix for the generator's own render.
    """
    bv, bi, t = config.video_batch, config.image_batch, config.video_length
    renders = ("",) if config.reuse_fakes else ("", "_g")
    keys = jax.random.split(key, 4 * len(renders))
    noise = {}
    for i, suffix in enumerate(renders):
        k = keys[4 * i : 4 * i + 4]
        noise["h0" + suffix] = jax.random.normal(k[0], (bv, MOTION_DIM))
        noise["eps" + suffix] = jax.random.normal(k[1], (bv, t, MOTION_DIM))
        noise["cats" + suffix] = jax.random.randint(k[2], (bv,), 0, labels.NUM_EMOTIONS)
        noise["img_t" + suffix] = jax.random.randint(k[3], (bi,), 0, t)
    return noise


# --- Shared pieces ----------------------------------------------------------------------------
def _apply_updates(tx: optax.GradientTransformation, grads, opt_state, params):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def pick_frames(clips: jax.Array, frame_idx: jax.Array) -> jax.Array:
    """D_I's fake images: image j is frame frame_idx[j] of clip j * B // Bi.

    clips [B, T, H, W, C], frame_idx int [Bi] -> [Bi, H, W, C]. Image j's source clip lies in
    j's own shard whenever B and Bi both divide over the devices, so this is shard-local and
    identical on 1 or N devices. Each frame is still drawn uniformly from the fakes, as the
    peer does (stratified over clips instead of with replacement).
    """
    b, bi = clips.shape[0], frame_idx.shape[0]
    clip_idx = (jnp.arange(bi) * b) // bi
    return clips[clip_idx, frame_idx]


# Frames per encoder call: the encoder's activations for 64 frames stay in a 2-core CPU's
# caches (64x64x3 -> 32x32x32 is 8 MiB), whole batches spill them (BENCHMARKS.md, "The
# encoder in chunks").
ENCODER_CHUNK = 64


def encoder_chunk(n: int, target: int | None = None) -> int:
    """Frames per `encode_frames` call for n frames: the largest divisor of n up to target
    (default `ENCODER_CHUNK`; n itself when n <= target; 1: no divisor helps, e.g. a prime n)."""
    target = ENCODER_CHUNK if target is None else target
    return max(d for d in range(1, min(n, target) + 1) if n % d == 0)


def encode_frames(models: Models, enc_params, enc_batch_stats, frames: jax.Array) -> jax.Array:
    """Content codes of frames [N, 64, 64, 3] in [-1, 1] -> [N, 50] (VAE: the mean).

    The encoder always runs with its pre-trained BN statistics (inference mode): frozen keeps
    them fixed by definition, and fine-tuning adapts the weights only (WORKSPACE.md). Each
    frame's code depends on that frame alone, so the frames go through in chunks of
    `encoder_chunk` (one `lax.map` loop: the same codes, computed cache-sized).
    """

    def encode(x: jax.Array) -> jax.Array:
        mean, _ = models.encoder.apply(
            {"params": enc_params, "batch_stats": enc_batch_stats}, x, train=False
        )
        return mean.astype(jnp.float32)

    n = frames.shape[0]
    chunk = encoder_chunk(n)
    if chunk == n or chunk < 8:  # one call; tiny chunks would cost more than they save
        return encode(frames)
    codes = jax.lax.map(encode, frames.reshape((n // chunk, chunk) + frames.shape[1:]))
    return codes.reshape((n,) + codes.shape[2:])


def encode_clips(models: Models, enc_params, enc_batch_stats, clips: jax.Array) -> jax.Array:
    """[B, T, 64, 64, 3] -> codes [B, T, 50]."""
    b, t = clips.shape[:2]
    codes = encode_frames(
        models, enc_params, enc_batch_stats, clips.reshape((b * t,) + IMAGE_SHAPE)
    )
    return codes.reshape(b, t, CODE_DIM)


def content_input(codes: jax.Array, content_encoding: str) -> jax.Array:
    """z_c per frame from the real clip's codes [B, T, 50] (thesis §4.3.1, §5.3.2).

    'single' repeats frame 1's code over all T frames; 'all' uses each frame's own code.
    """
    if content_encoding == "single":
        return jnp.broadcast_to(codes[:, :1], codes.shape)
    return codes


def render(
    models: Models,
    config: Config,
    gen_params,
    gen_batch_stats,
    z_c: jax.Array,
    h0: jax.Array,
    eps: jax.Array,
    cats: jax.Array,
    *,
    train: bool,
):
    """Generates clips from content codes, motion noise and requested emotions.

    Args:
      z_c: [B, T, 50] content code of every frame; h0: [B, 10]; eps: [B, T, 10];
        cats: int [B] in 0..5.
    Returns:
      (clips [B, T, 64, 64, 3] float32 in [-1, 1], updated generator batch_stats).
    """
    b, t = z_c.shape[:2]
    one_hot = jnp.broadcast_to(
        jax.nn.one_hot(cats, labels.NUM_EMOTIONS)[:, None], (b, t, labels.NUM_EMOTIONS)
    )
    motion_in = eps
    if config.category_to in ("motion", "both"):  # MoCoGAN: the category drives R_m
        motion_in = jnp.concatenate([eps, one_hot], axis=-1)
    z_m = models.motion.apply({"params": gen_params["motion"]}, h0, motion_in)
    parts = [z_c, one_hot, z_m] if config.category_to in ("generator", "both") else [z_c, z_m]
    z = jnp.concatenate([p.astype(jnp.float32) for p in parts], axis=-1).reshape(b * t, -1)
    variables = {"params": gen_params["generator"], "batch_stats": gen_batch_stats}
    if train:

        def apply(v, z):
            return models.generator.apply(v, z, train=True, mutable=["batch_stats"])

        if config.recompute_activations:
            # The backward pass keeps only the conv outputs: with `reuse_fakes` what it keeps
            # is live through both discriminator updates (BENCHMARKS.md, "Memory: the
            # generator's activations recomputed").
            apply = remat.recompute_in_backward(apply, generator_lib.KEEP_FOR_BACKWARD)
        frames, updates = apply(variables, z)
        new_stats = updates["batch_stats"]
    else:
        frames, new_stats = models.generator.apply(variables, z, train=False), gen_batch_stats
    return frames.astype(jnp.float32).reshape((b, t) + IMAGE_SHAPE), new_stats


def _norms(prefix: str, tree) -> dict[str, jax.Array]:
    return {f"{prefix}": optax.global_norm(tree)}


def real_and_fake_grads(
    model: nn.Module,
    params,
    batch_stats,
    real: jax.Array,
    fake: jax.Array,
    half_loss: Callable,
):
    """A discriminator's loss and global-batch gradient over its real and its fake batch.

    The two batches go through the network in separate calls, real first (BN sees them apart
    and its running averages take the real then the fake statistics, as MoCoGAN's two calls),
    as the two iterations of one `lax.scan`: the network's forward and backward pass is
    compiled once instead of twice, and only one batch's activations are live at a time. The
    loss is the sum of `half_loss(logits, target) -> (loss, parts)` over (real, 1.0) and
    (fake, 0.0), so the gradient is the same sum of the two halves' gradients that autodiff
    of the two calls gives.

    Returns:
      (loss pmean'd, parts stacked [2, ...] per shard, new batch_stats, grads pmean'd).
    """
    params = parallel.to_varying(params)

    def one_half(carry, inputs):
        stats, grad_sum = carry
        x, target = inputs

        def loss_fn(p):
            logits, upd = model.apply(
                {"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
            )
            loss, parts = half_loss(logits, target)
            return loss, (upd["batch_stats"], parts)

        (loss, (stats, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return (stats, jax.tree.map(jnp.add, grad_sum, grads)), (loss, parts)

    zeros = jax.tree.map(jnp.zeros_like, params)
    (stats, grads), (loss, parts) = jax.lax.scan(
        one_half,
        (batch_stats, zeros),
        (jnp.stack([real, fake]), jnp.array([1.0, 0.0], jnp.float32)),
    )
    return parallel.pmean(loss.sum()), parts, stats, parallel.pmean(grads)


# --- Autoencoder stage -----------------------------------------------------------------------
def make_ae_step(config: Config, models: Models, tx: optax.GradientTransformation) -> Callable:
    """Autoencoder pre-training step: MSE (+ KL for the VAE), Adam (thesis §4.1.3).

    Batch: 'image' [B, 64, 64, 3] in [-1, 1], 'eps' [B, 50].
    """
    vae = config.ae_type == "vae"

    def step(state: AeState, batch: Batch) -> tuple[AeState, dict]:
        x = batch["image"]

        def loss_fn(params):
            variables = {"params": params, "batch_stats": state.batch_stats}
            (recon, mean, logvar), updates = models.autoencoder.apply(
                variables, x, batch["eps"] if vae else None, train=True, mutable=["batch_stats"]
            )
            mse = losses.reconstruction_loss(x, recon)
            # KL per pixel value: MSE + KL is then the Gaussian ELBO divided by the pixel count.
            kl = losses.kl_divergence(mean, logvar) / PIXELS if vae else jnp.zeros(())
            return mse + config.ae_kl_weight * kl, (updates["batch_stats"], mse, kl)

        (loss, (batch_stats, mse, kl)), grads = parallel.grad_pmean(loss_fn, state.params)
        params, opt_state = _apply_updates(tx, grads, state.opt_state, state.params)
        metrics = {
            "train/ae_loss": loss,
            "train/ae_mse": parallel.pmean(mse),
            "train/ae_kl": parallel.pmean(kl),
            "grad_norm/ae": optax.global_norm(grads),
            "param_norm/ae": optax.global_norm(params),
        }
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
        )
        return new_state, metrics

    return step


# --- GAN stage -------------------------------------------------------------------------------
def make_gan_step(
    config: Config, models: Models, txs: dict[str, optax.GradientTransformation]
) -> Callable:
    """The VICE-GAN step. Batch: 'video' [Bv, T, 64, 64, 3] and 'image' [Bi, 64, 64, 3] in
    [-1, 1], 'video_label' int [Bv], plus the entries of `sample_gan_noise`."""
    finetune = config.ae_weights == "finetune"

    def real_codes_for(gen_params, state: GanState, video):
        # Frozen: stop_gradient on the encoder's weights, so nothing reaches them while the
        # content loss still back-propagates *through* the encoder into the generated frames.
        enc = gen_params["encoder"] if finetune else jax.lax.stop_gradient(state.enc_params)
        return enc, encode_clips(models, enc, state.enc_batch_stats, video)

    def render_fakes(gen_params, state: GanState, video, batch, suffix: str):
        enc, codes = real_codes_for(gen_params, state, video)
        z_c = content_input(codes, config.content_encoding)
        if not finetune:
            z_c = jax.lax.stop_gradient(z_c)
        clips, gen_stats = render(
            models,
            config,
            gen_params,
            state.gen_batch_stats,
            z_c,
            batch["h0" + suffix],
            batch["eps" + suffix],
            batch["cats" + suffix],
            train=True,
        )
        return clips, gen_stats

    def d_image_update(state: GanState, real_images, fake_images):
        # Two calls, not `real_and_fake_grads`' loop: in a loop body XLA:CPU ran D_I's kernel
        # gradients as its own convolutions, several times slower than YNNPACK's in the step's
        # main body (profile_step.py, tried at '16'), and D_I is cheap to compile twice.
        def loss_fn(params):
            real, upd = models.dimg.apply(
                {"params": params, "batch_stats": state.dimg_batch_stats},
                real_images,
                train=True,
                mutable=["batch_stats"],
            )
            # Separate calls: BN sees real and fake batches apart, as MoCoGAN.
            fake, upd = models.dimg.apply(
                {"params": params, **upd}, fake_images, train=True, mutable=["batch_stats"]
            )
            return losses.discriminator_loss(real, fake), upd["batch_stats"]

        (loss, stats), grads = parallel.grad_pmean(loss_fn, state.dimg_params)
        params, opt = _apply_updates(txs["dimg"], grads, state.dimg_opt_state, state.dimg_params)
        state = state.replace(dimg_params=params, dimg_batch_stats=stats, dimg_opt_state=opt)
        return state, {"train/d_image": loss, "grad_norm/dimg": optax.global_norm(grads)}

    def d_video_update(state: GanState, real_clips, real_labels, fake_clips):
        def half_loss(logits, target):
            adv = losses.bce_with_logits(logits[:, 0], target)
            # D_V learns the categories on real clips only (target 1): weight 0 on the fakes.
            cat = target * losses.category_loss(logits[:, 1:], real_labels)
            return adv + cat, (adv, cat)

        loss, (adv, cat), stats, grads = real_and_fake_grads(
            models.dvid,
            state.dvid_params,
            state.dvid_batch_stats,
            real_clips,
            fake_clips,
            half_loss,
        )
        params, opt = _apply_updates(txs["dvid"], grads, state.dvid_opt_state, state.dvid_params)
        state = state.replace(dvid_params=params, dvid_batch_stats=stats, dvid_opt_state=opt)
        return state, {
            "train/d_video": loss,
            "train/d_video_adv": parallel.pmean(adv.sum()),
            "train/d_video_cat": parallel.pmean(cat.sum()),
            "grad_norm/dvid": optax.global_norm(grads),
        }

    def g_loss(gen_params, fakes, state: GanState, batch, suffix: str):
        """G + R_m objective on given fakes, against the current (updated) discriminators."""
        enc, real_codes = real_codes_for(gen_params, state, batch["video"])
        # D's BN runs on the fake batch in train mode (as in PyTorch); its statistic updates
        # are discarded: the discriminators' running averages are never used.
        img_logits, _ = models.dimg.apply(
            {"params": state.dimg_params, "batch_stats": state.dimg_batch_stats},
            pick_frames(fakes, batch["img_t" + suffix]),
            train=True,
            mutable=["batch_stats"],
        )
        vid_logits, _ = models.dvid.apply(
            {"params": state.dvid_params, "batch_stats": state.dvid_batch_stats},
            fakes,
            train=True,
            mutable=["batch_stats"],
        )
        adv_img = losses.generator_adversarial_loss(img_logits)
        adv_vid = losses.generator_adversarial_loss(vid_logits[:, 0])
        cat = losses.category_loss(vid_logits[:, 1:], batch["cats" + suffix])
        fake_codes = encode_clips(models, enc, state.enc_batch_stats, fakes)
        content = losses.content_loss(real_codes, fake_codes)
        total = adv_img + adv_vid + cat + config.lambda_content * content
        return total, {
            "train/g_adv_image": adv_img,
            "train/g_adv_video": adv_vid,
            "train/g_category": cat,
            "train/g_content": content,
        }

    def step(state: GanState, batch: Batch) -> tuple[GanState, dict]:
        video = batch["video"]
        gen_params = parallel.to_varying(state.gen_params)
        if config.reuse_fakes:
            fakes, render_vjp, gen_stats = jax.vjp(
                lambda p: render_fakes(p, state, video, batch, ""), gen_params, has_aux=True
            )
        else:
            fakes, gen_stats = render_fakes(
                jax.lax.stop_gradient(gen_params), state, video, batch, ""
            )
        fakes_d = jax.lax.stop_gradient(fakes)
        state, m_img = d_image_update(state, batch["image"], pick_frames(fakes_d, batch["img_t"]))
        state, m_vid = d_video_update(state, video, batch["video_label"], fakes_d)
        state = state.replace(gen_batch_stats=gen_stats)

        if config.reuse_fakes:
            # d/dp L(p, F(p)) = dL/dp + vjp_F(dL/dF): exact gradient of the G objective.
            (loss, parts), (g_direct, g_fakes) = jax.value_and_grad(
                g_loss, argnums=(0, 1), has_aux=True
            )(gen_params, fakes, state, batch, "")
            (g_render,) = render_vjp(g_fakes)
            grads = jax.tree.map(jnp.add, g_direct, g_render)
        else:

            def full_loss(p):
                clips, stats = render_fakes(p, state, video, batch, "_g")
                total, parts = g_loss(p, clips, state, batch, "_g")
                return total, (parts, stats)

            (loss, (parts, gen_stats)), grads = jax.value_and_grad(full_loss, has_aux=True)(
                gen_params
            )
            state = state.replace(gen_batch_stats=gen_stats)
        grads = parallel.pmean(grads)
        params, opt = _apply_updates(txs["gen"], grads, state.gen_opt_state, state.gen_params)
        state = state.replace(step=state.step + 1, gen_params=params, gen_opt_state=opt)
        if finetune:
            state = state.replace(enc_params=params["encoder"])
        metrics = {
            "train/g_loss": loss,
            **parts,
            "grad_norm/gen": optax.global_norm(grads),
            "param_norm/gen": optax.global_norm(params),
        }
        metrics = parallel.pmean({**metrics, **m_img, **m_vid})
        return state, metrics

    return step
