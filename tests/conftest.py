"""Pytest setup: two host CPU devices, so the sharded step can be checked against one device.

XLA_FLAGS must be set before JAX is imported anywhere, hence at conftest import time.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
