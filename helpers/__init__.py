"""Thin helpers shared by the notebooks: model zoo, streaming measurement, metrics, paths."""

from helpers.models import LoadedModel, ModelUnavailableError, UnknownModelError, known_models, load_model
from helpers.streaming import AttentionMissingError, Measurements, measure, measure_with_layers

__all__ = [
    "AttentionMissingError",
    "LoadedModel",
    "Measurements",
    "ModelUnavailableError",
    "UnknownModelError",
    "known_models",
    "load_model",
    "measure",
    "measure_with_layers",
]
