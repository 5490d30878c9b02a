"""Test-session settings."""

import os

import torch

# Under pytest-xdist every worker gets one thread: the workers share the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
