"""Finding 5's earlier rule (registered in 6fbf757, replaced by ``finding5``), kept runnable so that the deviations
log can say, on every run, what the verdict would have been under it.

It compared a probe on the surface features plus a view with the surface-only probe: the scalar view (the paper's
metrics and their profiles) and the representational view (every layer's mean-pooled vector, layer 0 included),
net of a control task (random labels of the same class sizes), with labels permuted within token-count quintiles.
Its baseline did not contain which words a prompt uses, so a bag of words with no model passed it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from helpers.stats.findings import views
from helpers.stats.findings.crossfit import RIDGE
from helpers.stats.findings.finding5 import MIN_GAIN, Settings, run_verdict
from helpers.stats.findings.rules import (
    ALPHA,
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    MIN_PROMPTS_PER_CATEGORY,
    NOT_TESTABLE,
    holm,
)
from helpers.stats.robustness import StudyData

KINDS: tuple[str, ...] = ("scalar", "representational")


def control_labels(labels: np.ndarray, seed: int) -> np.ndarray:
    """The control task: random labels with the same class sizes (a fixed random permutation of ``labels``)."""
    return np.asarray(labels)[np.random.default_rng(seed).permutation(len(labels))]


def ridge_correct(
    kernels: list[np.ndarray], label_sets: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Cross-validated ridge classification: the share of repeats in which each prompt is predicted right.

    ``kernels``: K probes, each (n, n); ``label_sets``: (m, n), every set with the same categories; returns (K, m, n).
    """
    from scipy.linalg import cho_factor, cho_solve

    classes = np.unique(label_sets[0])
    m, n = label_sets.shape
    onehot = (label_sets.T[:, :, None] == classes[None, None, :]).reshape(n, m * len(classes)).astype(np.float64)
    correct = np.zeros((len(kernels), m, n))
    repeats = np.zeros(n)
    for train, test in folds:
        repeats[test] += 1
        for index, kernel in enumerate(kernels):
            factor = cho_factor(kernel[np.ix_(train, train)] + RIDGE * np.eye(len(train)))
            scores = kernel[np.ix_(test, train)] @ cho_solve(factor, onehot[train])
            predicted = classes[scores.reshape(len(test), m, len(classes)).argmax(axis=2)]  # (t, m)
            correct[index, :, test] += predicted == label_sets[:, test].T
    return correct / repeats


def signature_test(
    baseline: np.ndarray, view: np.ndarray, labels: np.ndarray, bands: np.ndarray, settings: Settings
) -> dict[str, float]:
    """The earlier test of one view: gain over the surface, control gain, selectivity, p-values."""
    rng = np.random.default_rng(settings.seed + 2)
    label_sets = np.stack(
        [labels, control_labels(labels, settings.seed + 1)]
        + [views.permuted_within(labels, bands, rng) for _ in range(settings.permutations)]
    )
    surface = views.surface_kernel(baseline)
    full, base = ridge_correct([surface + view, surface], label_sets, views.splits(labels, settings))
    gains = full.mean(axis=1) - base.mean(axis=1)  # (m,)
    gain, control_gain, null = float(gains[0]), float(gains[1]), gains[2:]
    difference = full[0] - base[0]
    n, sd = len(difference), float(difference.std(ddof=1))
    t = (difference.mean() - MIN_GAIN) / (sd / np.sqrt(n)) if sd > 0 else (-np.inf if gain < MIN_GAIN else np.inf)
    return {
        "gain": gain,
        "selectivity": gain - control_gain,
        "p_permutation": (1 + int(np.sum(null >= gain - 1e-12))) / (1 + len(null)),
        "p_below_minimum": float(stats.t.cdf(t, n - 1)),
    }


def model_tests(
    prompts: pd.DataFrame,
    profiles: np.ndarray,
    vectors: np.ndarray,
    settings: Settings = Settings(),  # noqa: B008 (frozen)
) -> pd.DataFrame:
    """The earlier rule's tests of one model: one row per view (``KINDS``)."""
    labels = prompts["category"].to_numpy()
    surface = views.surface_table(prompts)
    baseline = views.surface_basis(surface)
    bands = views.length_bands(surface["n_tokens"].to_numpy(), settings.length_bands)
    kernels = views.layer_kernels(vectors, baseline)
    chosen = {"scalar": views.view_kernel(profiles, baseline), "representational": kernels.mean(axis=0)}
    return pd.DataFrame(
        [
            {
                "kind": kind,
                "min_per_category": int(pd.Series(labels).value_counts().min()),
                **signature_test(baseline, view, labels, bands, settings),
            }
            for kind, view in chosen.items()
        ]
    )


def model_verdicts(tests: pd.DataFrame) -> pd.DataFrame:
    """Per model, the earlier rule: a view found a signature if p_permutation < ALPHA/2 and selectivity >= the
    minimum; does not hold if both views' gains are below the minimum (Holm across models)."""
    rows = []
    for model, group in tests.groupby("model", sort=False):
        found = group[(group["p_permutation"] < ALPHA / len(KINDS)) & (group["selectivity"] >= MIN_GAIN)]
        rows.append(
            {"model": model, "holds": not found.empty, "p_below_minimum": float(group["p_below_minimum"].max())}
        )
    table = pd.DataFrame(rows)
    table["verdict"] = np.where(
        table["holds"],
        HOLDS,
        np.where(np.array(holm(table["p_below_minimum"].tolist())) < ALPHA, DOES_NOT_HOLD, INCONCLUSIVE),
    )
    return table[["model", "p_below_minimum", "verdict"]]


def earlier_verdict(tests: pd.DataFrame) -> str:
    """The run's verdict under the earlier rule, from ``model_tests`` of every model (column ``model``)."""
    return run_verdict(model_verdicts(tests)["verdict"])


CACHE_KEY = "signatures_earlier_rule"
"""Where ``findings.analyse`` puts the earlier rule's per-model tests (notebook 08) in ``StudyData.cache``."""


def verdict_on(data: StudyData) -> str:
    """Finding 5's verdict under the earlier rule on a run's data (its tests from notebook 08, in the cache), or
    'not testable here' as the current rule would say it (no tests, too few prompts or models)."""
    from helpers.stats.findings.finding5 import ActivationSignatures

    tests = data.cache.get(CACHE_KEY)
    if tests is None or tests.empty or ActivationSignatures().why_not_testable(data):
        return NOT_TESTABLE
    return earlier_verdict(tests[tests["min_per_category"] >= MIN_PROMPTS_PER_CATEGORY])
