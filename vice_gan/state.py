"""Train states of the two stages, the networks a `Config` asks for, and their initialisation.

States are `flax.struct` dataclasses of arrays only (so Orbax saves them whole and `jax.jit`
can donate them). Optax transforms are not stored here: the step factories close over them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from vice_gan import labels
from vice_gan.config import Config
from vice_gan.models import autoencoder, discriminators, generator, motion

CODE_DIM = 50  # content code z_c (thesis §4.1)
MOTION_DIM = 10  # z_m: GRU hidden size (MoCoGAN, DESIGN.md)
IMAGE_SHAPE = (64, 64, 3)

PyTree = Any


@flax.struct.dataclass
class AeState:
    """Autoencoder pre-training state."""

    step: jax.Array  # int32 []
    rng: jax.Array  # uint32 [2], the run's base key; per-step keys are fold_in(rng, step)
    params: PyTree  # {'encoder': ..., 'decoder': ...}
    batch_stats: PyTree
    opt_state: PyTree


@flax.struct.dataclass
class GanState:
    """GAN-stage state: G + R_m (+ encoder when fine-tuning), D_I, D_V.

    `gen_params` holds what the generator's optimiser trains: {'generator', 'motion'} and,
    with --ae_weights=finetune, 'encoder' too. A frozen encoder lives in `enc_params` only and
    is never touched by any optimiser, so it stays bit-identical.
    """

    step: jax.Array
    rng: jax.Array
    gen_params: PyTree
    gen_batch_stats: PyTree
    gen_opt_state: PyTree
    enc_params: PyTree
    enc_batch_stats: PyTree
    dimg_params: PyTree
    dimg_batch_stats: PyTree
    dimg_opt_state: PyTree
    dvid_params: PyTree
    dvid_batch_stats: PyTree
    dvid_opt_state: PyTree

    def encoder_params(self) -> PyTree:
        """The encoder parameters in use (trained copy when fine-tuning)."""
        return self.gen_params.get("encoder", self.enc_params)


@dataclasses.dataclass(frozen=True)
class Models:
    """The linen modules of a run (stateless descriptions; parameters live in the states)."""

    autoencoder: autoencoder.Autoencoder
    encoder: autoencoder.Encoder
    motion: motion.MotionNet
    generator: generator.Generator
    dimg: discriminators.ImageDiscriminator
    dvid: discriminators.VideoDiscriminator


def compute_dtype(config: Config) -> jnp.dtype:
    """Activation dtype: bfloat16 for mixed precision, else float32 (params stay float32)."""
    return jnp.bfloat16 if config.precision == "bfloat16" else jnp.float32


def build_models(config: Config, axis_name: str | None = "batch") -> Models:
    """Instantiates every network of `config`; BatchNorm reduces over `axis_name`."""
    dtype = compute_dtype(config)
    ae_kw = dict(
        code_dim=CODE_DIM, width_divisor=config.ae_width_divisor, dtype=dtype, axis_name=axis_name
    )
    return Models(
        autoencoder=autoencoder.make_autoencoder(config.ae_type, config.ae_size, **ae_kw),
        encoder=autoencoder.Encoder(size=config.ae_size, ae_type=config.ae_type, **ae_kw),
        motion=motion.MotionNet(hidden=MOTION_DIM, dtype=dtype),
        generator=generator.Generator(ngf=config.ngf, dtype=dtype, axis_name=axis_name),
        dimg=discriminators.ImageDiscriminator(ndf=config.ndf, dtype=dtype, axis_name=axis_name),
        dvid=discriminators.VideoDiscriminator(
            ndf=config.ndf, num_classes=labels.NUM_EMOTIONS, dtype=dtype, axis_name=axis_name
        ),
    )


def generator_input_dim(config: Config) -> int:
    """Size of G_I's per-frame input [z_c; z_a (if the label enters G); z_m]."""
    one_hot = labels.NUM_EMOTIONS if config.category_to in ("generator", "both") else 0
    return CODE_DIM + one_hot + MOTION_DIM


def motion_input_dim(config: Config) -> int:
    """Size of R_m's per-step input: noise, plus the one-hot when the label enters R_m."""
    one_hot = labels.NUM_EMOTIONS if config.category_to in ("motion", "both") else 0
    return MOTION_DIM + one_hot


def adam(lr: float, config: Config) -> optax.GradientTransformation:
    """Adam with the run's betas (thesis §5.2: 0.5, 0.999)."""
    return optax.adam(lr, b1=config.beta1, b2=config.beta2)


def create_ae_state(
    config: Config, models: Models, tx: optax.GradientTransformation, seed: int
) -> AeState:
    """Fresh autoencoder state; deterministic in `seed`."""
    # Under one jit: eager init would compile every initialiser op on its own (slow on CPU).
    return jax.jit(lambda: _create_ae_state(models, tx, seed))()


def _create_ae_state(models: Models, tx: optax.GradientTransformation, seed: int) -> AeState:
    rng = jax.random.PRNGKey(seed)
    init_rng, run_rng = jax.random.split(rng)
    x = jnp.zeros((1,) + IMAGE_SHAPE, jnp.float32)
    eps = jnp.zeros((1, CODE_DIM), jnp.float32)
    variables = models.autoencoder.init(init_rng, x, eps, train=False)
    params = variables["params"]
    return AeState(
        step=jnp.zeros((), jnp.int32),
        rng=run_rng,
        params=params,
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(params),
    )


def create_gan_state(
    config: Config,
    models: Models,
    txs: dict[str, optax.GradientTransformation],
    encoder_params: PyTree,
    encoder_batch_stats: PyTree,
    seed: int,
) -> GanState:
    """Fresh GAN state around a pre-trained encoder; deterministic in `seed`.

    Args:
      txs: optimisers keyed 'gen', 'dimg', 'dvid'.
      encoder_params, encoder_batch_stats: the autoencoder's 'encoder' sub-trees.
    """
    return jax.jit(lambda p, s: _create_gan_state(config, models, txs, p, s, seed))(
        encoder_params, encoder_batch_stats
    )


def _create_gan_state(config, models, txs, encoder_params, encoder_batch_stats, seed):
    rng = jax.random.PRNGKey(seed + 1)  # +1: independent of the AE stage's init stream
    k_mot, k_gen, k_dimg, k_dvid, run_rng = jax.random.split(rng, 5)
    mot = models.motion.init(
        k_mot,
        jnp.zeros((1, MOTION_DIM)),
        jnp.zeros((1, config.video_length, motion_input_dim(config))),
    )
    gen = models.generator.init(k_gen, jnp.zeros((1, generator_input_dim(config))), train=False)
    dimg = models.dimg.init(k_dimg, jnp.zeros((1,) + IMAGE_SHAPE), train=False)
    dvid = models.dvid.init(k_dvid, jnp.zeros((1, config.video_length) + IMAGE_SHAPE), train=False)
    gen_params = {"generator": gen["params"], "motion": mot["params"]}
    if config.ae_weights == "finetune":
        gen_params["encoder"] = encoder_params
    return GanState(
        step=jnp.zeros((), jnp.int32),
        rng=run_rng,
        gen_params=gen_params,
        gen_batch_stats=gen["batch_stats"],
        gen_opt_state=txs["gen"].init(gen_params),
        enc_params=encoder_params,
        enc_batch_stats=encoder_batch_stats,
        dimg_params=dimg["params"],
        dimg_batch_stats=dimg["batch_stats"],
        dimg_opt_state=txs["dimg"].init(dimg["params"]),
        dvid_params=dvid["params"],
        dvid_batch_stats=dvid["batch_stats"],
        dvid_opt_state=txs["dvid"].init(dvid["params"]),
    )


def gan_optimizers(config: Config) -> dict[str, optax.GradientTransformation]:
    """One Adam per player (thesis §5.2), keyed as in `GanState`'s prefixes."""
    return {
        "gen": adam(config.lr, config),
        "dimg": adam(config.lr, config),
        "dvid": adam(config.lr, config),
    }


def abstract_state(fresh: Callable[[], PyTree], sharding: jax.sharding.Sharding) -> PyTree:
    """Shapes and dtypes of the state `fresh()` builds, placed by `sharding`, found by tracing
    it only: a template to restore a checkpoint into, with nothing initialised or compiled.

    A built template costs compiling and running the initialisers (for the GAN stage's
    encoder: the whole autoencoder's, Adam moments included).
    """
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), jax.eval_shape(fresh)
    )


def param_count(tree: PyTree) -> int:
    """Number of scalars in a parameter tree."""
    return int(sum(x.size for x in jax.tree.leaves(tree)))
