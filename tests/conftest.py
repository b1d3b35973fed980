"""Shared test setup: deterministic seeds, thread count sized for the 2-core CI machine."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# Under pytest-xdist each worker gets one thread, otherwise up to two: oversubscribing 2 cores
# makes BLAS-heavy tests several times slower.
_threads = 1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1))
torch.set_num_threads(_threads)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture
def one_thread():
    """One BLAS thread, for tests of tiny models/graphs: a second thread only adds synchronisation
    (up to 50× slower on a busy 2-core machine). Opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
