"""Settings that keep gradio from calling out (set before it is imported)."""

from __future__ import annotations

import os

#: Environment gradio and huggingface_hub read: no analytics, no version check,
#: no hub look-ups.  Values the user set are kept.
OFFLINE_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_SSR_MODE": "False",
}


def quiet_gradio() -> None:
    """Set :data:`OFFLINE_ENV` (where not set) in this process's environment."""
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
