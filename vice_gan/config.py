"""Every command-line flag, the frozen `Config` they become, and its validation.

Flags are defined here and nowhere else. `main.py` turns them into a `Config` once
(`from_flags`) and validates it (`validate`) before any work or output; the library only ever
sees `Config`. Flagfiles (`experiments/*.flags`) may include each other with `--flagfile=`;
later flags and the command line override earlier ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from absl import flags

MODES = ("train_ae", "train", "evaluate", "generate", "all")
DATASETS = ("synthetic_faces", "synthetic_faces/small", "mug", "video_folder")

# --- What to run and where --------------------------------------------------------------------
flags.DEFINE_enum(
    "mode",
    "all",
    MODES,
    "train_ae: autoencoder pre-training; train: GAN stage "
    "(needs a trained autoencoder); evaluate; generate; all: the four in order.",
)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, samples, metrics.")
flags.DEFINE_string(
    "ae_dir",
    None,
    "Autoencoder run directory (default WORKDIR/ae). Several "
    "GAN runs may share one, as the ablation does.",
)
# --- Data ---------------------------------------------------------------------------------------
flags.DEFINE_string(
    "dataset",
    "synthetic_faces",
    f"One of {', '.join(DATASETS)} (a '/config' suffix picks a builder config).",
)
flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "Where TFDS data sets are prepared.")
flags.DEFINE_string("manual_dir", None, "MUG / video_folder: where the raw data lies.")
flags.DEFINE_enum(
    "condition",
    "seen",
    ("seen", "unseen"),
    "Training-data composition "
    "(thesis §5.3.1): seen adds 2 emotions of each test subject to training.",
)
flags.DEFINE_integer("split_seed", 0, "Seed of the subject-disjoint 80/20 split.")
flags.DEFINE_integer("video_length", 16, "Frames per clip T (thesis: 16; D_V needs >= 13).")
flags.DEFINE_integer("frame_stride", 2, "Take every n-th frame of a video (MoCoGAN: 2).")
# --- Autoencoder (thesis §4.1) ------------------------------------------------------------------
flags.DEFINE_enum("ae_type", "sae", ("sae", "vae"), "Standard or variational autoencoder.")
flags.DEFINE_enum(
    "ae_size",
    "large",
    ("small", "medium", "large"),
    "Tables 6-8 (thesis picks the large SAE, Table 4).",
)
flags.DEFINE_integer(
    "ae_width_divisor",
    1,
    "Divide the autoencoder's channel counts (tests, quick runs); 1 is the thesis.",
)
flags.DEFINE_integer("ae_num_steps", 2000, "Autoencoder pre-training steps.")
flags.DEFINE_integer("ae_batch", 32, "Autoencoder batch size (thesis: 32).")
flags.DEFINE_float("ae_lr", 0.005, "Autoencoder Adam learning rate (thesis: 0.005).")
flags.DEFINE_float("ae_kl_weight", 1.0, "Weight of the VAE's KL term.")
# --- The three experimental switches + where the label enters -----------------------------------
flags.DEFINE_enum(
    "content_encoding",
    "single",
    ("single", "all"),
    "single: encode frame 1 and repeat it; all: encode every frame (thesis §4.3.4).",
)
flags.DEFINE_enum(
    "ae_weights",
    "frozen",
    ("frozen", "finetune"),
    "frozen: stop_gradient, BN fixed, no optimiser; finetune: encoder trained with the generator.",
)
flags.DEFINE_enum(
    "category_to",
    "generator",
    ("generator", "motion", "both"),
    "Where the emotion one-hot enters: generator input (thesis), motion GRU (MoCoGAN), both.",
)
# --- GAN (thesis §4.3, §5.2) ----------------------------------------------------------------------
flags.DEFINE_integer("ngf", 64, "Generator width (paper: 64).")
flags.DEFINE_integer("ndf", 64, "Discriminator width (paper: 64).")
flags.DEFINE_integer("video_batch", 32, "Clips per step, global (paper: 32).")
flags.DEFINE_integer("image_batch", 32, "Frames per step for D_I, global (paper: 32).")
flags.DEFINE_integer("num_steps", 10000, "GAN training steps.")
flags.DEFINE_float("lr", 2e-4, "Adam learning rate of G, D_I, D_V (paper: 2e-4).")
flags.DEFINE_float("beta1", 0.5, "Adam beta1 (paper: 0.5).")
flags.DEFINE_float("beta2", 0.999, "Adam beta2 (paper: 0.999).")
flags.DEFINE_float("lambda_content", 1.0, "Weight of the content-consistency loss.")
flags.DEFINE_boolean(
    "reuse_fakes",
    True,
    "Render the fakes once per step and use them for the "
    "D_I, D_V and G updates (the generator does not change in between); False "
    "renders a second batch for the G update, as MoCoGAN's code does.",
)
flags.DEFINE_boolean(
    "recompute_activations",
    True,
    "The G update's backward pass keeps only each generator layer's conv output and "
    "recomputes its BatchNorm and ReLU outputs (less memory, the same values); False keeps "
    "them from the forward pass.",
)
flags.DEFINE_enum(
    "precision",
    "float32",
    ("float32", "bfloat16"),
    "Computation dtype (bfloat16: mixed precision, params stay float32; for GPU/TPU).",
)
# --- Bookkeeping ----------------------------------------------------------------------------------
flags.DEFINE_integer("seed", 0, "Seed of initialisation, noise and data order.")
flags.DEFINE_integer("checkpoint_every", 1000, "Save a checkpoint every N steps (and at the end).")
flags.DEFINE_integer("keep_checkpoints", 3, "Keep the last K checkpoints.")
flags.DEFINE_integer("log_every", 50, "Log losses and progress every N steps.")
flags.DEFINE_integer("sample_every", 1000, "Write a sample GIF grid every N steps (0: never).")
flags.DEFINE_string(
    "compilation_cache_dir",
    None,
    "Where compiled XLA programs are kept for the next run with the same shapes (resume, "
    "rerun): default $JAX_COMPILATION_CACHE_DIR, else $VICE_GAN_CACHE/jax "
    "(~/.cache/vice_gan/jax); '' for none.",
)
# --- Evaluation / generation ----------------------------------------------------------------------
flags.DEFINE_enum(
    "eval_input",
    "other",
    ("other", "neutral"),
    "Evaluation input clip: the subject's clip of another emotion, or its neutral take.",
)
flags.DEFINE_integer("num_generate", 4, "generate: how many test subjects to render.")
flags.DEFINE_string(
    "generate_input",
    None,
    "generate: a clip (video file, frame folder, .npy "
    "[T,64,64,3] uint8) to use as identity source instead of test subjects.",
)
# --- Multi-host (jax.distributed) -----------------------------------------------------------------
flags.DEFINE_string(
    "coordinator_address",
    None,
    "host:port of process 0; enables jax.distributed with --num_processes and --process_id.",
)
flags.DEFINE_integer("num_processes", None, "Number of processes (jax.distributed).")
flags.DEFINE_integer("process_id", None, "This process's id (jax.distributed).")


class ConfigError(ValueError):
    """A flag value or combination that cannot work; the message names the flag."""


@dataclasses.dataclass(frozen=True)
class Config:
    """All settings of a run, typed and immutable. Field docs are the flag help strings."""

    mode: str = "all"
    workdir: str = ""
    ae_dir: str = ""
    dataset: str = "synthetic_faces"
    data_dir: str = "~/tensorflow_datasets"
    manual_dir: str | None = None
    condition: str = "seen"
    split_seed: int = 0
    video_length: int = 16
    frame_stride: int = 2
    ae_type: str = "sae"
    ae_size: str = "large"
    ae_width_divisor: int = 1
    ae_num_steps: int = 2000
    ae_batch: int = 32
    ae_lr: float = 0.005
    ae_kl_weight: float = 1.0
    content_encoding: str = "single"
    ae_weights: str = "frozen"
    category_to: str = "generator"
    ngf: int = 64
    ndf: int = 64
    video_batch: int = 32
    image_batch: int = 32
    num_steps: int = 10000
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lambda_content: float = 1.0
    reuse_fakes: bool = True
    recompute_activations: bool = True
    precision: str = "float32"
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 50
    sample_every: int = 1000
    compilation_cache_dir: str | None = None
    eval_input: str = "other"
    num_generate: int = 4
    generate_input: str | None = None
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    def replace(self, **changes) -> Config:
        """A copy with some fields changed (and re-validated by the caller)."""
        return dataclasses.replace(self, **changes)


def from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> Config:
    """Converts parsed absl flags into a `Config` (paths expanded, ae_dir defaulted)."""
    values = {f.name: flag_values[f.name].value for f in dataclasses.fields(Config)}
    if values["workdir"]:
        values["workdir"] = os.path.abspath(os.path.expanduser(values["workdir"]))
    values["ae_dir"] = os.path.abspath(
        os.path.expanduser(values["ae_dir"] or os.path.join(values["workdir"] or ".", "ae"))
    )
    values["data_dir"] = os.path.abspath(os.path.expanduser(values["data_dir"]))
    if values["manual_dir"]:
        values["manual_dir"] = os.path.abspath(os.path.expanduser(values["manual_dir"]))
    return Config(**values)


_ENUMS = {
    "mode": MODES,
    "condition": ("seen", "unseen"),
    "ae_type": ("sae", "vae"),
    "ae_size": ("small", "medium", "large"),
    "content_encoding": ("single", "all"),
    "ae_weights": ("frozen", "finetune"),
    "category_to": ("generator", "motion", "both"),
    "precision": ("float32", "bfloat16"),
    "eval_input": ("other", "neutral"),
}
_AT_LEAST = {  # flag -> smallest valid value
    "ae_width_divisor": 1,
    "ae_num_steps": 0,
    "ae_batch": 1,
    "ngf": 1,
    "ndf": 1,
    "video_batch": 1,
    "image_batch": 1,
    "num_steps": 0,
    "frame_stride": 1,
    "checkpoint_every": 1,
    "keep_checkpoints": 1,
    "log_every": 1,
    "sample_every": 0,
    "num_generate": 1,
    "seed": 0,  # NumPy's generators (data order, splits) take no negative seeds
    "split_seed": 0,
    # D_V's four temporal-VALID k4 convs need 13 frames (16 -> 13 -> 10 -> 7 -> 4 -> 1).
    "video_length": 13,
}


def validate(config: Config) -> None:
    """Checks every value and combination; raises `ConfigError` naming the flag.

    Called before any work or output, so a bad command line costs nothing.
    """
    if not config.workdir:
        raise ConfigError("--workdir is required: the run directory for checkpoints and logs")
    if config.ae_dir and os.path.normpath(config.ae_dir) == os.path.normpath(config.workdir):
        # Both stages keep checkpoints/ and fingerprint.json in their directory.
        raise ConfigError(
            f"--ae_dir={config.ae_dir} is the --workdir; the autoencoder needs its own "
            "directory (default: WORKDIR/ae)"
        )
    dataset_base = config.dataset.split("/")[0]
    if config.dataset not in DATASETS and dataset_base not in (
        "synthetic_faces",
        "mug",
        "video_folder",
    ):
        raise ConfigError(f"--dataset={config.dataset!r}: expected one of {', '.join(DATASETS)}")
    for name, allowed in _ENUMS.items():
        if getattr(config, name) not in allowed:
            raise ConfigError(
                f"--{name}={getattr(config, name)!r}: expected one of {', '.join(allowed)}"
            )
    for name, low in _AT_LEAST.items():
        value = getattr(config, name)
        if not isinstance(value, int) or value < low:
            raise ConfigError(f"--{name}={value}: must be an integer >= {low}")
    for name in ("ae_lr", "lr", "lambda_content", "ae_kl_weight"):
        value = getattr(config, name)
        if not value >= 0 or value != value or value == float("inf"):
            raise ConfigError(f"--{name}={value}: must be a finite number >= 0")
    for name in ("lr", "ae_lr"):
        if getattr(config, name) == 0:
            raise ConfigError(f"--{name}=0: a zero learning rate trains nothing")
    for name in ("beta1", "beta2"):
        if not 0.0 <= getattr(config, name) < 1.0:
            raise ConfigError(f"--{name}={getattr(config, name)}: must be in [0, 1)")
    if config.ae_type == "vae" and config.ae_kl_weight == 0:
        raise ConfigError(
            "--ae_type=vae with --ae_kl_weight=0 is a plain autoencoder with noise; "
            "use --ae_type=sae or a positive --ae_kl_weight"
        )
    distributed = (config.coordinator_address, config.num_processes, config.process_id)
    if any(v is not None for v in distributed) and not all(v is not None for v in distributed):
        raise ConfigError(
            "--coordinator_address, --num_processes and --process_id go together "
            "(or set none and let jax.distributed read the cluster environment)"
        )
    if config.num_processes is not None and not 0 <= config.process_id < config.num_processes:
        raise ConfigError(
            f"--process_id={config.process_id}: must be in "
            f"[0, --num_processes={config.num_processes})"
        )
    if config.generate_input is not None and not os.path.exists(config.generate_input):
        raise ConfigError(f"--generate_input={config.generate_input}: no such file or folder")


# Fields that change what is trained; a workdir holding a checkpoint made with other values
# is refused. Paths, step counts and logging cadence may change between resumes.
_GAN_FINGERPRINT_EXCLUDE = frozenset(
    {
        "mode",
        "workdir",
        "ae_dir",
        "data_dir",
        "manual_dir",
        "num_steps",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
        "sample_every",
        "compilation_cache_dir",
        "recompute_activations",
        "eval_input",
        "num_generate",
        "generate_input",
        "coordinator_address",
        "num_processes",
        "process_id",
        "ae_num_steps",
    }
)
AE_FIELDS = (
    "dataset",
    "split_seed",
    "ae_type",
    "ae_size",
    "ae_width_divisor",
    "ae_batch",
    "ae_lr",
    "ae_kl_weight",
    "seed",
    "precision",
)


def fingerprint_fields(config: Config, stage: str) -> dict:
    """The settings a checkpoint of `stage` ('ae' or 'gan') depends on, as a JSON-able dict."""
    if stage == "ae":
        return {k: getattr(config, k) for k in AE_FIELDS}
    fields = dataclasses.asdict(config)
    return {k: v for k, v in fields.items() if k not in _GAN_FINGERPRINT_EXCLUDE}


def fingerprint(config: Config, stage: str) -> str:
    """A short stable hash of `fingerprint_fields`."""
    blob = json.dumps(fingerprint_fields(config, stage), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
