"""Pytest setup: two host CPU devices, and one XLA compilation cache for the whole run.

Environment variables must be set before JAX is imported anywhere, hence at conftest import
time; the subprocesses that tests start (the real entry point) inherit them.

* Two devices, so the sharded step can be checked against one device.
* A persistent compilation cache shared by every test, every pytest-xdist worker and every
  subprocess of one run: many tests build the same tiny steps (test_main, test_resume,
  test_bad_input, test_multihost all train the tiny config), which are then compiled once
  instead of once per test or process. A cached executable is the one XLA would compile for
  the same program, so no test's result depends on it. The folder is deleted at the end of the
  run; set JAX_COMPILATION_CACHE_DIR yourself to keep one between runs.
"""

import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Named by the pytest process that owns the run: a plain run's own pid, or, in a pytest-xdist
# worker, its parent's (the controller, which starts every worker and outlives them).
_RUN_ID = os.getppid() if "PYTEST_XDIST_WORKER" in os.environ else os.getpid()
_OWN_CACHE = os.path.join(tempfile.gettempdir(), f"vice_gan_test_xla_cache_{_RUN_ID}")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
    # Programs that compile in under 0.2 s are cheaper to compile than to read back.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


def pytest_sessionfinish(session, exitstatus):
    """The run's own cache goes when the run ends (by the xdist controller, or a plain run)."""
    del exitstatus
    if not hasattr(session.config, "workerinput"):
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
