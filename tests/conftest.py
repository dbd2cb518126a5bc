"""Test setup: 8 host CPU devices so that multi-device code is exercised on CPU.

XLA reads XLA_FLAGS once, when jax initialises its backend, so this must run before any
test imports jax.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    from dl.data import load

    return load("digits")


@pytest.fixture(scope="session")
def mnist5k():
    from dl.data import load

    return load("mnist5k")
