"""Test-session settings.

Order checks (the suite must not depend on test order): ``--test-order reverse``
runs the collected tests backwards, ``--test-order shuffle:SEED`` in a seeded
random order.  Thread checks: set ``OMP_NUM_THREADS`` (1, 2, ...) and it is
respected, also under pytest-xdist.
"""

import os
import random

import pytest
import torch

# Under pytest-xdist every worker gets one thread (the workers share the cores),
# unless OMP_NUM_THREADS says otherwise.
if os.environ.get("PYTEST_XDIST_WORKER") and not os.environ.get("OMP_NUM_THREADS"):
    torch.set_num_threads(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--test-order",
        default="as-collected",
        help="as-collected (default) | reverse | shuffle:SEED — run the tests in another "
        "order to check that none depends on what ran before it",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    order = config.getoption("--test-order")
    if order == "as-collected":
        return
    if order == "reverse":
        items.reverse()
    elif order.startswith("shuffle:") and order[len("shuffle:"):].isdigit():
        random.Random(int(order[len("shuffle:"):])).shuffle(items)
    else:
        raise pytest.UsageError(
            f"--test-order must be 'as-collected', 'reverse' or 'shuffle:SEED', got {order!r}"
        )


# ----------------------------------------------------------------------------- shared fixtures
@pytest.fixture
def tiny_bcos():
    """A small pure B-cos network (``fmnist_bcos``, width 4, 10 classes, grey
    input), seeded, in eval mode — fast enough for any test."""
    import bcosnet

    torch.manual_seed(0)
    return bcosnet.create_model("fmnist_bcos", num_classes=10, width=4).eval()


@pytest.fixture
def tiny_twin():
    """The conventional twin of :func:`tiny_bcos` (Conv-BN-ReLU), seeded, eval mode."""
    import bcosnet

    torch.manual_seed(0)
    return bcosnet.create_model("standard_fmnist_bcos", num_classes=10, width=4).eval()


@pytest.fixture
def structured_images():
    """Four 1×28×28 grey images with structure (a bright square on a gradient, at a
    different place in each), not noise: maps of a trained-looking shape."""
    n, h, w = 4, 28, 28
    yy, xx = torch.meshgrid(torch.linspace(0, 0.3, h), torch.linspace(0, 0.3, w), indexing="ij")
    images = (yy + xx).expand(n, 1, h, w).clone()
    for i in range(n):
        r, c = 3 + 5 * i, 20 - 5 * i
        images[i, 0, r:r + 6, c:c + 6] = 1.0
    return images


@pytest.fixture
def reliability(request):
    """Record the bad inputs / faults a test tries (see tests/reliability/record.py)."""
    from tests.reliability.record import Recorder

    rec = Recorder(request.node.nodeid)
    yield rec
    rec.flush()
