"""Shared fixtures: models are loaded once per session (``load_model`` caches them)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from helpers import models  # noqa: E402

TINY_MODELS = sorted(models.TINY)
EMBEDDED_MODELS = sorted(models.EMBEDDED)

PROMPTS = [
    "What is 2+2?",
    "Write a short poem about the sea at night, with rhyme.",
    "If all bloops are razzies and all razzies are lazzies, are all bloops lazzies?",
]


@pytest.fixture(scope="session")
def prompts() -> list[str]:
    return list(PROMPTS)
