"""vice-gan: a JAX/Flax reimplementation of VICE-GAN (identity-consistent emotion video GAN)."""

import os

from vice_gan import xla_options

__version__ = "0.1.0"

# imageio-ffmpeg starts ffmpeg (videos in and out) with a preexec_fn, i.e. Python code run in
# the forked child before exec, unless this variable is set. In a multithreaded process (JAX's)
# that can hang (imageio-ffmpeg's own note, its issue #58) and makes JAX warn "os.fork() was
# called ... will likely lead to a deadlock" on every video. Without it ffmpeg is a plain
# fork + exec; the cost is that Ctrl-C also reaches ffmpeg, which the writers' atomic renames
# (writers._atomic) already tolerate. A value the user sets is kept.
os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")

# XLA:CPU's depth-first schedule (less scratch memory, same speed): an XLA_FLAGS option that JAX
# reads when its backend starts, so it is set on import, before anything computes
# (xla_options.py; a value the user sets in XLA_FLAGS is kept).
xla_options.set_process_flags()
