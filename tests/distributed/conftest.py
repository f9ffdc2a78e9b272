"""The Ray cluster the Ray tests run on."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def ray_local():
    """The Ray cluster CI starts (``ray start --head``; its address in HIERLENS_RAY_ADDRESS),
    joined as a user would with ``--address``; without one, a local Ray in this process."""
    ray = pytest.importorskip("ray")
    address = os.environ.get("HIERLENS_RAY_ADDRESS")
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()  # disconnects (and stops what this test started), nothing else
