"""Suite-wide settings: one torch thread per test process.

The suite runs under `pytest -n 2` on 2 cores; two torch threads in each worker oversubscribe the
machine (measured ~10x slower per tiny training step on a loaded 2-core box).
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    torch.set_num_threads(1)
    yield
