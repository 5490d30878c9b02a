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
