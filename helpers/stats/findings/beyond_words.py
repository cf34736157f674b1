"""Finding 5's test of one model: do its later layers decode a prompt's category beyond what the words give away?

Every probe sees the surface design (``views.surface_kernel``) plus one view with the surface partialled out, on
the same stratified folds (``views.splits``):

* the **text-only baselines**: the lexical probe (TF-IDF of word 1-2-grams, of character 2-5-grams, or both,
  chosen inside each training fold: ``lexical``), and the model's own **layer 0** (the embedding output
  mean-pooled over the prompt: a bag of its input tokens, before any computation);
* the **model's later layers**: all of them at once (the mean of their kernels, as registered), and the single
  best later layer, chosen inside each training fold;
* the paper's metrics and their per-layer profiles (reported, not part of the verdict).

A probe's gain beyond the words is its accuracy minus the stronger baseline's; its interval and p-values come from
the corrected resampled t (``crossfit.CorrectedT``), and the later layers' extra information is also tested by a
conditional permutation (``crossfit.conditional_permutation_p``). The rule that decides is ``finding5``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from helpers.stats.findings import crossfit, lexical, views
from helpers.stats.findings.finding5 import (
    ALL_LAYERS,
    BEST_LAYER,
    LAYER0,
    LEXICAL,
    MIN_GAIN,
    PAPER_METRICS_PROBE,
    Settings,
)
from helpers.stats.robustness import single_threaded_blas


@dataclass
class ModelTest:
    """One model's finding-5 test: one row per probe (``tests``) and the per-layer accuracies (``layers``)."""

    tests: pd.DataFrame
    layers: pd.DataFrame


def _most_chosen(choice: np.ndarray, names: list[str]) -> str:
    """The candidate chosen in most folds, with how often: 'words (7 of 10 folds)'."""
    counts = pd.Series(choice).value_counts()
    return f"{names[int(counts.index[0])]} ({int(counts.iloc[0])} of {len(choice)} folds)"


@single_threaded_blas  # small matrices: BLAS threads only contend on a busy machine
def test_model(
    prompts: pd.DataFrame,
    profiles: np.ndarray,
    vectors: np.ndarray,
    settings: Settings = Settings(),  # noqa: B008 (frozen)
) -> ModelTest:
    """Finding 5's per-model test.

    ``prompts``: the model's prompt table (category, text and the surface columns of ``views.surface_table``), in
    the order of ``profiles`` (n, F: ``views.metric_profiles``) and ``vectors`` (n, L+1, D: mean-pooled hidden
    states, 0 = the embedding output). Needs at least one later layer (L >= 1).
    """
    labels = prompts["category"].to_numpy()
    if vectors.shape[1] < 2:
        raise ValueError(f"finding 5 needs the embedding output and at least one later layer; got {vectors.shape[1]}")
    baseline = views.surface_basis(views.surface_table(prompts))
    surface = views.surface_kernel(baseline)
    layer_views = views.layer_kernels(vectors, baseline)
    lexical_views = {
        name: views.partialled_out(kernel, views.standardised(baseline))
        for name, kernel in lexical.ngram_kernels(lexical.texts_of(prompts)).items()
    }
    later = layer_views[1:]
    probes = [
        surface,
        *(surface + kernel for kernel in lexical_views.values()),
        *(surface + kernel for kernel in layer_views),
        surface + later.mean(axis=0),
        surface + views.view_kernel(profiles, baseline),
    ]
    folds = views.splits(labels, settings)
    tested, within = crossfit.fold_accuracies(probes, labels, folds)
    n_lexical, n_layers = len(lexical_views), len(layer_views)
    layer_rows = slice(1 + n_lexical, 1 + n_lexical + n_layers)
    lexical_choice, lexical_folds = crossfit.chosen_in_training(tested[1 : 1 + n_lexical], within[1 : 1 + n_lexical])
    layer_tested, layer_within = tested[layer_rows], within[layer_rows]
    best_choice, best_folds = crossfit.chosen_in_training(layer_tested[1:], layer_within[1:])
    baselines = {LEXICAL: lexical_folds, LAYER0: layer_tested[0]}
    stronger = max(baselines, key=lambda name: baselines[name].mean())
    share = crossfit.test_share(folds)
    reduced = surface + lexical_views["words and characters"] + layer_views[0]
    statistic, p_conditional = crossfit.conditional_permutation_p(
        reduced, reduced + later.mean(axis=0), labels, folds, settings.permutations, settings.seed + 4
    )
    common = {
        "n_prompts": len(labels),
        "min_per_category": int(pd.Series(labels).value_counts().min()),
        "chance": float(pd.Series(labels).value_counts(normalize=True).max()),
        "surface_accuracy": float(tested[0].mean()),
        "lexical_accuracy": float(lexical_folds.mean()),
        "lexical_choice": _most_chosen(lexical_choice, list(lexical_views)),
        "layer0_accuracy": float(layer_tested[0].mean()),
        "stronger_baseline": stronger,
        "conditional_statistic": statistic,
        "p_conditional": p_conditional,
    }
    probe_folds = {ALL_LAYERS: tested[-2], BEST_LAYER: best_folds, PAPER_METRICS_PROBE: tested[-1]}
    rows = []
    for name, folds_accuracy in probe_folds.items():
        against = {base: crossfit.CorrectedT.of(folds_accuracy - acc, share) for base, acc in baselines.items()}
        gain = against[stronger]
        low, high = gain.interval()
        rows.append(
            {
                "probe": name,
                "decides": name != PAPER_METRICS_PROBE,
                "accuracy": float(folds_accuracy.mean()),
                **common,
                "chosen": _most_chosen(best_choice + 1, [f"layer {i}" for i in range(n_layers)])
                if name == BEST_LAYER
                else "",
                "gain": gain.estimate,
                "gain_low": low,
                "gain_high": high,
                "gain_over_lexical": against[LEXICAL].estimate,
                "gain_over_layer0": against[LAYER0].estimate,
                # above zero over both baselines (intersection-union: the larger p)
                "p_above": max(test.p_above(0.0) for test in against.values()),
                # above the minimum effect over both baselines (intersection-union: the larger p)
                "p_above_minimum": max(test.p_above(MIN_GAIN) for test in against.values()),
                # below the minimum over the stronger baseline is below it over one of them (Bonferroni over two)
                "p_below": min(1.0, len(against) * min(test.p_below(MIN_GAIN) for test in against.values())),
            }
        )
    per_layer = pd.DataFrame(
        {
            "layer": np.arange(n_layers),
            "relative_depth": np.arange(n_layers) / max(n_layers - 1, 1),
            "accuracy": layer_tested.mean(axis=1),
            "surface_accuracy": float(tested[0].mean()),
            "lexical_accuracy": float(lexical_folds.mean()),
            "layer0_accuracy": float(layer_tested[0].mean()),
            "chance": common["chance"],
        }
    )
    per_layer["beyond_words"] = per_layer["accuracy"] - per_layer[["lexical_accuracy", "layer0_accuracy"]].max(axis=1)
    return ModelTest(pd.DataFrame(rows), per_layer)
