import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

# Under pytest-xdist each worker gets its share of the cores (Dynamo tracing, the bulk of the
# suite, is single-threaded Python anyway).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test starts with an empty Dynamo cache so recompile limits and guards never leak."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def tiny():
    from tiny_models import MODELS

    return MODELS.__getitem__
