"""Shared test settings: one torch thread.

Tiny tensors run faster on one thread than on two, and results do not depend on the machine's
core count, so every test runs single-threaded.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
