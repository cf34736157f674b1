"""Finding 5's rule on planted truths: text-only negative controls, noise, and category signal beyond the words.

Each simulated model uses a run's real prompts (their texts, token counts and categories), so the lexical baseline
is exactly as strong as in the run. Its layer 0 is an untrained embedding of the prompt's words
(``lexical.hashed_word_embedding``: what an embedding layer mean-pooled over a prompt gives away); its later layers
are, per scenario, a text-only view (a negative control: the rule must never say ``holds``), noise, or layer 0 plus
a planted category signal (the rule should say ``holds``). Per model, the rule's own code decides
(``beyond_words.test_model``, then ``finding5.model_verdicts``); the table has the columns of the other findings'
operating characteristics (``calibration``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from helpers.stats.findings import beyond_words, lexical
from helpers.stats.findings.finding5 import Settings, model_verdicts
from helpers.stats.findings.rules import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE

LATER_LAYERS = 3
"""Later layers of a simulated model (each its scenario's view plus a little noise)."""
LAYER_NOISE = 0.1
"""Noise added to each later layer, in units of the view's SD per column: the layers differ, the view stays."""
SMALL_SIGNAL = 0.1
"""A planted category signal beyond the words too small to reach the minimum effect (in the units of ``SIGNALS``):
'holds' is then wrong."""
SIGNALS: tuple[float, ...] = (0.2, 0.4)
"""Planted category signals beyond the words, in SDs of layer 0's units per unit (a category direction), large
enough to reach the minimum effect: 'does not hold' is then wrong."""


View = Callable[[list[str], np.ndarray, np.ndarray, np.random.Generator], np.ndarray]
"""A scenario's later-layer view: (texts, layer 0 (n, D), labels (n,) as integers, rng) -> (n, F) features."""


def runs_for(calibration_runs: int) -> int:
    """Simulated models per truth for a run whose parameter file asks ``calibration_runs`` simulated runs of
    finding 1: one in 25 (at least 2), since each simulated model of finding 5 costs seconds, not milliseconds."""
    return max(2, calibration_runs // 25)


@dataclass(frozen=True)
class Truth:
    """A planted truth: its name, the view its later layers get, and the verdict a right rule gives."""

    name: str
    later: View
    right: str | None  # None: only 'does not hold' or 'inconclusive' are right (no signal beyond the words)


def _text_only(name: str) -> View:
    view = lexical.TEXT_ONLY_VIEWS[name]
    return lambda texts, layer0, labels, rng: view(texts)


def _noise(texts: list[str], layer0: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(layer0.shape).astype(np.float32)


def _planted(strength: float) -> View:
    def later(texts: list[str], layer0: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        directions = rng.standard_normal((int(labels.max()) + 1, layer0.shape[1]))
        directions *= layer0.std(axis=0) / np.linalg.norm(directions, axis=1, keepdims=True) * np.sqrt(layer0.shape[1])
        return (layer0 + strength * directions[labels]).astype(np.float32)

    return later


def truths() -> list[Truth]:
    """The planted truths, negative controls first."""
    controls = [Truth(f"text only: {name}", _text_only(name), None) for name in lexical.TEXT_ONLY_VIEWS]
    small = Truth(
        f"category signal beyond the words below the minimum, {SMALL_SIGNAL:g} SD", _planted(SMALL_SIGNAL), None
    )
    planted = [Truth(f"category signal beyond the words, {s:g} SD", _planted(s), HOLDS) for s in SIGNALS]
    return [*controls, Truth("noise: later layers carry nothing", _noise, None), small, *planted]


def simulated_vectors(truth: Truth, prompts: pd.DataFrame, seed: int) -> np.ndarray:
    """A simulated model's (n, 1 + LATER_LAYERS, D) float16 vectors on ``prompts`` under ``truth``."""
    rng = np.random.default_rng(seed)
    texts = lexical.texts_of(prompts)
    layer0 = lexical.hashed_word_embedding(texts, seed=seed + 1)
    labels = pd.factorize(prompts["category"], sort=True)[0]
    view = truth.later(texts, layer0, labels, rng)
    width = max(view.shape[1], layer0.shape[1])
    vectors = np.zeros((len(texts), 1 + LATER_LAYERS, width), np.float32)
    vectors[:, 0, : layer0.shape[1]] = layer0
    spread = view.std(axis=0) + 1e-12
    for layer in range(1, 1 + LATER_LAYERS):
        vectors[:, layer, : view.shape[1]] = view + LAYER_NOISE * spread * rng.standard_normal(view.shape)
    return vectors.astype(np.float16)


def simulate(truth: Truth, prompts: pd.DataFrame, runs: int, settings: Settings, seed: int = 0) -> pd.DataFrame:
    """``runs`` simulated models under ``truth``: each one's row of ``finding5.model_verdicts``."""
    profiles = np.zeros((len(prompts), 1))  # the paper's metrics play no part in the verdict
    rows = []
    for run in range(runs):
        vectors = simulated_vectors(truth, prompts, seed=seed + 1000 * run)
        tests = beyond_words.test_model(prompts, profiles, vectors, settings).tests.assign(model="simulated")
        rows.append(model_verdicts(tests))
    return pd.concat(rows, ignore_index=True)


def operating_characteristics(
    prompts: pd.DataFrame,
    runs: int,
    settings: Settings = Settings(),  # noqa: B008 (frozen)
    seed: int = 0,
) -> pd.DataFrame:
    """How often the rule gives each verdict per model under each truth, on ``prompts`` (``runs`` models each)."""
    setting = f"1 simulated model on this run's {len(prompts)} prompts, {1 + LATER_LAYERS} hidden states"
    rows = []
    for truth in truths():
        simulated = simulate(truth, prompts, runs, settings, seed)
        verdicts = simulated["verdict"]
        share = {verdict: float((verdicts == verdict).mean()) for verdict in (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE)}
        rows.append(
            {
                "finding": 5,
                "planted_truth": truth.name,
                "setting": setting,
                "right_verdict": truth.right or "not 'holds'",
                "holds": share[HOLDS],
                "does_not_hold": share[DOES_NOT_HOLD],
                "inconclusive": share[INCONCLUSIVE],
                "wrong_verdicts": share[HOLDS] if truth.right is None else share[DOES_NOT_HOLD],
                "power": share[HOLDS] if truth.right == HOLDS else np.nan,
                "simulated_runs": runs,
                "mean_gain_beyond_words": float(simulated["gain_beyond_words"].mean()),
            }
        )
    return pd.DataFrame(rows)
