"""The paper's six architectures, built in code: their sizes match the paper, and the tests cover each."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM

import helpers
from helpers.base import paths
from helpers.core import models
from helpers.study.tables import format_parameters


@pytest.mark.parametrize("hub_id", sorted(models.PAPER_CONFIGS))
def test_built_architecture_has_the_papers_published_parameter_count(hub_id: str) -> None:
    published = pd.read_csv(paths.DATA / "reference" / "model_summary.csv").set_index("Model")["Parameters"]
    config = models.paper_config(hub_id)
    auto = AutoModel if config.model_type in models.ENCODER_FAMILIES else AutoModelForCausalLM
    with torch.device("meta"):  # shapes only: no memory, no time
        count = sum(p.numel() for p in auto.from_config(config).parameters())
    assert format_parameters(count) == published[models.PAPER_MODELS[hub_id].display_name]


def test_every_paper_architecture_has_a_tiny_model_in_the_exactness_tests() -> None:
    tiny_types = {model_type for model_type, _ in models.TINY_CONFIGS.values()}
    for hub_id, (model_type, _) in models.PAPER_CONFIGS.items():
        assert model_type in tiny_types, f"{hub_id} ({model_type}) has no tiny counterpart"
        assert models.PAPER_MODELS[hub_id].family == model_type


def test_full_size_random_model_measures_offline() -> None:
    loaded = helpers.load_model("random-gpt2")
    assert (loaded.n_parameters, loaded.n_layers, loaded.n_heads, loaded.hidden_size) == (124_439_808, 12, 12, 768)
    table = helpers.measure(loaded, ["What is 2+2?", "Name three primes."], progress=False)
    assert len(table) == 2 and (table["nonfinite_layers"] == 0).all() and table["attention_entropy"].gt(0).all()
