"""Thin helpers shared by the notebooks, one subpackage per layer (docs/architecture.md): ``base`` (paths,
storage), ``core`` (the model zoo, streaming measurement, metrics), ``study``, ``stats``, ``report``, and
the ``workflow`` module.

The public names below load on first use, so ``import helpers.base.store`` or ``helpers.study``
(what every Snakemake parse and job does) never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "AttentionMissingError": "helpers.core.streaming",
    "LoadedModel": "helpers.core.models",
    "Measurements": "helpers.core.streaming",
    "ModelUnavailableError": "helpers.core.models",
    "UnknownModelError": "helpers.core.models",
    "known_models": "helpers.core.models",
    "load_model": "helpers.core.models",
    "measure": "helpers.core.streaming",
    "measure_with_layers": "helpers.core.streaming",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'helpers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
