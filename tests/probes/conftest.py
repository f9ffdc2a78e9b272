"""Settings for the probe tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # The CPUs are shared: one thread keeps the many tiny tensor ops fast and predictable.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
