"""TFDS builder of `synthetic_faces`, the embedded default data set (DESIGN.md, Data).

Procedurally rendered 64x64 RGB face videos: one identity per subject, six EMFACS emotions plus a
neutral take per subject, every frame annotated with its FACS action-unit intensities. Nothing is
downloaded; the data are a deterministic function of the config (including its seed).

Read without TensorFlow:

    import tensorflow_datasets as tfds
    import vice_gan.datasets.synthetic_faces  # registers the builder
    builder = tfds.builder("synthetic_faces/small", data_dir=DIR)
    builder.download_and_prepare(file_format="array_record")
    source = builder.as_data_source()["train"]
"""

import concurrent.futures
import ctypes
import dataclasses
import multiprocessing
import os
import sys
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from vice_gan import labels
from vice_gan.datasets import schema
from vice_gan.datasets.synthetic_faces import facs, identity, renderer

# Random streams: an identity and a take of the same (seed, subject) must never share a seed.
_IDENTITY_STREAM, _TAKE_STREAM = 0, 1


@dataclasses.dataclass(eq=False)
class SyntheticFacesConfig(tfds.core.BuilderConfig):
    """Size of a synthetic_faces variant.

    Attributes:
      num_subjects: subjects (identities), with dense ids 0..S-1.
      takes_per_emotion: takes of each of the six emotions per subject.
      neutral_takes: neutral takes per subject (AUs 0 apart from blinks).
      min_frames, max_frames: each take's length T is uniform in [min_frames, max_frames].
      seed: the data set is a deterministic function of this seed.
    """

    num_subjects: int = 50
    takes_per_emotion: int = 2
    neutral_takes: int = 1
    min_frames: int = 64
    max_frames: int = 80
    seed: int = 0


def identity_rng(seed: int, subject: int) -> np.random.Generator:
    """The random generator of a subject's identity."""
    return np.random.default_rng([seed, _IDENTITY_STREAM, subject])


def take_rng(seed: int, subject: int, emotion: int, take: int) -> np.random.Generator:
    """The random generator of one take (its length, AU timeline and head motion)."""
    return np.random.default_rng([seed, _TAKE_STREAM, subject, emotion, take])


def make_take(
    config: SyntheticFacesConfig, subject: int, emotion: int, take: int
) -> tuple[str, dict]:
    """Renders one take as a TFDS example of the shared schema plus `au`.

    Args:
      config: the variant.
      subject: subject id in [0, num_subjects).
      emotion: label index (vice_gan.labels.ALL_LABELS).
      take: take index within (subject, emotion).

    Returns:
      (key, example) with frames uint8 [T, 64, 64, 3] and au float32 [T, NUM_AUS].
    """
    ident = identity.sample_identity(identity_rng(config.seed, subject))
    rng = take_rng(config.seed, subject, emotion, take)
    num_frames = int(rng.integers(config.min_frames, config.max_frames + 1))
    au = facs.au_timeline(rng, emotion, num_frames)
    pose = renderer.head_motion(rng, num_frames)
    frames = renderer.render_video(ident, au, pose)
    key = f"s{subject:03d}_{labels.ALL_LABELS[emotion]}_take{take:03d}"
    return key, {
        "frames": frames,
        "num_frames": num_frames,
        "subject": subject,
        "subject_name": f"s{subject:03d}",
        "emotion": emotion,
        "take": take,
        "take_name": f"take{take:03d}",
        "au": au,
    }


def take_list(config: SyntheticFacesConfig) -> list[tuple[int, int, int]]:
    """Every (subject, emotion, take) of the variant, subject-major."""
    jobs = []
    for subject in range(config.num_subjects):
        for emotion in range(labels.NUM_EMOTIONS):
            jobs += [(subject, emotion, t) for t in range(config.takes_per_emotion)]
        jobs += [(subject, labels.NEUTRAL_LABEL, t) for t in range(config.neutral_takes)]
    return jobs


def _make_take_job(args: tuple) -> tuple[str, dict]:
    return make_take(*args)


def _init_worker() -> None:
    """Keeps freed memory in a render worker's heap (glibc malloc; no-op elsewhere).

    glibc serves blocks above its mmap threshold from fresh mappings and unmaps them on free,
    so each of a take's multi-MB NumPy temporaries page-faults in anew: measured here, that was
    ~40% of the rendering time. A 32 MB threshold (glibc's maximum) and no trimming avoid it.
    Only worker processes, which this builder owns, are tuned.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameter numbers (malloc.h)
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 1 << 30)


def _can_fork() -> bool:
    """Whether worker processes may be forked: POSIX, and no JAX runtime in this process."""
    return "fork" in multiprocessing.get_all_start_methods() and "jax" not in sys.modules


class SyntheticFaces(tfds.core.GeneratorBasedBuilder):
    """Procedural face-expression videos with FACS ground truth (TFDS name `synthetic_faces`)."""

    VERSION = tfds.core.Version("3.0.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "2.0.0": (
            "`au` gains AU17 (chin raiser), AU43 (eye closure; partial: drooping lids) and AU64"
            " (eyes down): 19 columns. Disgust is 4+7+9+10+15+16+25, sadness 1+4+15+17+43+64,"
            " fear adds AU15, anger AU17; AU9 draws deeper nasal wrinkles, raised nose wings and"
            " cheeks; a dropped jaw with relaxed lips shows less of the upper teeth."
        ),
        "3.0.0": (
            "Fear is 1+2+4+5+7+15+20+26 with AU2 at 0.5, AU4 at 1.0 and AU7 at 0.8 (brows drawn"
            " together and flatter, lower lids tensed); a dropped jaw with relaxed lips (AU26"
            " without AU20) opens into an upright oval; lips stretched by AU20 bare the teeth"
            " further back, taper towards the corners and lose the dark corner accents (no"
            " more dark spots beside a fearful mouth); AU1 with AU4 deepens the central"
            " forehead lines into the omega of grief."
        ),
    }
    BUILDER_CONFIGS = [
        SyntheticFacesConfig(
            name="default",
            description="50 subjects x (6 emotions x 2 takes + 1 neutral), 64-80 frames a take.",
            num_subjects=50,
            takes_per_emotion=2,
            neutral_takes=1,
            min_frames=64,
            max_frames=80,
        ),
        SyntheticFacesConfig(
            name="small",
            description="10 subjects x (6 emotions + 1 neutral), 64 frames: tests, quickstart.",
            num_subjects=10,
            takes_per_emotion=1,
            neutral_takes=1,
            min_frames=64,
            max_frames=64,
        ),
    ]
    DEFAULT_CONFIG_NAME = "default"
    # TFDS derives this from the package through `importlib_resources`, which the project does
    # not install (it is an optional extra of etils); the module file is the same answer.
    code_path = epath.Path(__file__)

    def __init__(self, *, num_workers: int | None = None, **kwargs):
        """Builder; `kwargs` are TFDS's (config, data_dir, file_format, ...).

        Args:
          num_workers: processes rendering takes while this one encodes and writes them.
            0 renders in this process. None picks the CPU count (at most 4) when worker
            processes can be forked, i.e. JAX is not loaded here (forking a process running
            JAX's threads is unsafe), and 0 otherwise. An explicit count with JAX loaded uses
            "spawn" workers, which need the calling script to be import-safe
            (`if __name__ == "__main__":`).
        """
        super().__init__(**kwargs)
        if num_workers is None:
            num_workers = min(4, os.cpu_count() or 1) if _can_fork() else 0
        self._num_workers = 0 if num_workers == 1 else num_workers

    def _info(self) -> tfds.core.DatasetInfo:
        au = tfds.features.Tensor(shape=(None, facs.NUM_AUS), dtype=np.float32)
        return self.dataset_info_from_configs(
            description=(
                "Synthetic 64x64 face videos of the six basic emotions plus a neutral take per "
                "subject, rendered from FACS action units (EMFACS prototypes, MUG-like "
                f"neutral-onset-apex-offset-neutral timing). `au` columns: AUs {facs.AUS}."
            ),
            features=schema.video_features(extra={"au": au}),
            homepage=None,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # nothing to download
        return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[str, dict]]:
        jobs = [(self.builder_config, *job) for job in take_list(self.builder_config)]
        if self._num_workers == 0:
            yield from map(_make_take_job, jobs)
            return
        # Rendering is pure NumPy and independent per take, so it parallelises over processes.
        ctx = multiprocessing.get_context("fork" if _can_fork() else "spawn")
        with concurrent.futures.ProcessPoolExecutor(
            self._num_workers, mp_context=ctx, initializer=_init_worker
        ) as pool:
            yield from pool.map(_make_take_job, jobs, chunksize=4)
