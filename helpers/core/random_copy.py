"""A random-weights copy of a loaded model: the same architecture, config and tokenizer, fresh weights.

Finding 5 counts a layer's category-selective units against the same layer of such a copy: what an untrained
network of the same shape already separates (word identity mixed by random weights) is not a signature of
training. The copy is built from the model's own config (``type(model)(config)``, transformers' initialisation)
under a fixed seed, so it is the same on every machine for the same seed and library versions.
"""

from __future__ import annotations

import dataclasses
from typing import cast

import torch
from transformers import PreTrainedModel

from helpers.core.models import LoadedModel


def random_copy(loaded: LoadedModel, seed: int) -> LoadedModel:
    """``loaded``'s architecture re-initialised with ``seed`` (its dtype, device, attention implementation and
    tokenizer kept); ``loaded`` itself is left as it is."""
    source = loaded.model
    parameter = next(source.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: torch.nn.Module = type(source)(source.config)
    model = model.to(device=parameter.device, dtype=parameter.dtype).eval()
    return dataclasses.replace(
        loaded,
        display_name=f"{loaded.display_name} (random weights)",
        model=cast(PreTrainedModel, model),
        revision=f"random init of {loaded.name}'s config, seed {seed}",
        extra={**loaded.extra, "random_copy_of": loaded.name, "random_copy_seed": seed},
    )
