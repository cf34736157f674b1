"""Finding 5: do prompt categories leave activation signatures beyond what a prompt's surface gives away?

Three views of one question, per model (prompts are the replicates within a model; models are the
replicates for "across architectures"):

* **scalar signatures**: a probe decodes the category from the paper's three metrics and their
  per-layer profiles, against a probe on the surface features alone;
* **representational signatures**: the same probe on each layer's mean-pooled hidden vectors (and on
  all layers at once), with the surface features added to the baseline, and a control task (random
  labels with the same class sizes; Hewitt and Liang 2019) so that probe capacity is not read as signal;
* **selective units**: per layer and unit, a category-vs-rest effect size at equal token count.

The probe is always the same: surface features (a cubic spline of token count, words, digits,
punctuation, tokens per word) plus the view's features, standardised, reduced by PCA (label-free,
on all of a model's prompts) and decoded by multinomial logistic regression under stratified
cross-validation repeated over seeds. The rule that decides from the per-model tests this module makes,
``ActivationSignatures``, is stated before any data are seen in ``finding5``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from helpers.base import store
from helpers.stats.findings.finding5 import MIN_GAIN, model_verdicts
from helpers.stats.findings.rules import ALPHA, significant

SURFACE_FEATURES: tuple[str, ...] = ("n_tokens", "n_words", "n_digits", "n_punctuation", "tokens_per_word")
"""What a prompt's surface gives away, without any model: the baseline every signature must beat."""
PAPER_METRICS: tuple[str, ...] = ("final_activation", "attention_entropy", "max_sparsity")
PROFILE_STATISTICS: tuple[str, ...] = ("mean", "near_zero_0.01", "attention_entropy")
"""The per-layer statistics behind the paper's three metrics (mean activation, |h| < 0.01, attention entropy)."""
MIN_UNIT_D = 0.8
"""A selective unit: |d| at least 0.8 (category vs the rest, at equal token count) and FDR q < ``ALPHA``."""
RIDGE = 1.0
"""The probe's L2 penalty (scikit-learn's ``alpha``) on kernels scaled to a mean diagonal of 1 per view."""
SURFACE_WEIGHT = 10.0
"""The surface design's kernel weight: its features are penalised 10x less than a view's, so the baseline is strong."""
INTERCEPT_WEIGHT = 10.0
"""A constant added to every kernel: a weakly penalised intercept."""
PROFILE_GRID = np.linspace(0.0, 1.0, 9)
"""Relative depths at which per-layer profiles are compared across models (models differ in depth)."""
_PUNCTUATION = re.compile(r"[^\w\s]")


@dataclass(frozen=True)
class Settings:
    """How hard the analysis works; the defaults keep the default study within its time budget."""

    folds: int = 5  # stratified folds (fewer when a category has fewer prompts)
    repeats: int = 2  # cross-validation repeated over this many seeds
    components: int = 16  # explorer only: PCA components of each layer's vectors for the logistic probe
    permutations: int = 99  # label permutations within length bands, per model and kind
    unit_permutations: int = 19  # label permutations for the selective-unit null, per model
    length_bands: int = 5  # quantile bands of token count within which labels are permuted
    regularisation: float = 1.0  # inverse L2 strength (C) of the logistic probe (explorer, transfer)
    seed: int = 0


# --- features ---------------------------------------------------------------------------------------


def surface_table(prompts: pd.DataFrame) -> pd.DataFrame:
    """``SURFACE_FEATURES`` of each prompt from the prompt table (n_tokens, n_words, n_digits, text): (n, 5)."""
    words = prompts["n_words"].to_numpy(float)
    return pd.DataFrame(
        {
            "n_tokens": prompts["n_tokens"].to_numpy(float),
            "n_words": words,
            "n_digits": prompts["n_digits"].to_numpy(float),
            "n_punctuation": prompts["text"].map(lambda text: len(_PUNCTUATION.findall(text))).to_numpy(float),
            "tokens_per_word": prompts["n_tokens"].to_numpy(float) / np.maximum(words, 1.0),
        },
        index=prompts.index,
    )


def length_basis(n_tokens: np.ndarray) -> np.ndarray:
    """A natural-ish cubic B-spline basis of token count (4 quantile knots): (n,) -> (n, 5)."""
    from sklearn.preprocessing import SplineTransformer

    values = np.asarray(n_tokens, float)[:, None]
    if np.ptp(values) == 0:
        return np.zeros((len(values), 1))
    return SplineTransformer(n_knots=4, degree=3, knots="quantile", include_bias=False).fit_transform(values)


def surface_basis(surface: pd.DataFrame) -> np.ndarray:
    """The baseline's design: spline of token count, log(1 + count) of the others, tokens per word: (n, k)."""
    others = [np.log1p(surface[name].to_numpy(float)) for name in ("n_words", "n_digits", "n_punctuation")]
    return np.column_stack([length_basis(surface["n_tokens"].to_numpy()), *others, surface["tokens_per_word"]])


def metric_profiles(prompts: pd.DataFrame, layers: pd.DataFrame) -> np.ndarray:
    """The paper's three metrics and the per-layer profiles of ``PROFILE_STATISTICS``, in prompt order: (n, F).

    ``prompts``: one model's prompt table (prompt_id, the metrics); ``layers``: its long per-layer table.
    """
    chosen = layers[layers["statistic"].isin(PROFILE_STATISTICS) & layers["head"].isna()]
    wide = chosen.pivot_table(index="prompt_id", columns=["statistic", "layer"], values="value", aggfunc="first")
    wide = wide.reindex(prompts["prompt_id"].to_numpy())
    return np.column_stack([prompts[list(PAPER_METRICS)].to_numpy(float), wide.to_numpy(float)])


def profile_on_grid(prompts: pd.DataFrame, layers: pd.DataFrame) -> np.ndarray:
    """Each profile interpolated to ``PROFILE_GRID`` relative depths, with the three metrics, standardised: (n, F)."""
    chosen = layers[layers["statistic"].isin(PROFILE_STATISTICS) & layers["head"].isna()]
    columns = [prompts[list(PAPER_METRICS)].to_numpy(float)]
    for statistic in PROFILE_STATISTICS:
        wide = chosen[chosen["statistic"] == statistic].pivot_table(
            index="prompt_id", columns="layer", values="value", aggfunc="first"
        )
        wide = wide.reindex(prompts["prompt_id"].to_numpy())
        depth = wide.columns.to_numpy(float) / layers["layer"].max()
        columns.append(np.array([np.interp(PROFILE_GRID, depth, row) for row in wide.to_numpy(float)]))
    features = np.column_stack(columns)
    spread = features.std(axis=0)
    return (features - features.mean(axis=0)) / np.where(spread > 0, spread, 1.0)


def standardised(features: np.ndarray) -> np.ndarray:
    """Columns z-scored over prompts (non-finite values set to the column mean, constant columns dropped):
    (n, F) -> (n, F') float32. Units of very different scale (massive activations) then weigh alike."""
    features = np.asarray(features, np.float32)
    finite = np.isfinite(features)
    if not finite.all():
        means = np.nanmean(np.where(finite, features, np.nan), axis=0)
        features = np.where(finite, features, np.nan_to_num(means))
    centred = features - features.mean(axis=0)
    spread = centred.std(axis=0)
    keep = spread > 1e-6 * max(float(spread.max(initial=0.0)), 1e-30)
    return centred[:, keep] / spread[keep]


def linear_kernel(features: np.ndarray) -> np.ndarray:
    """The linear kernel of the standardised features, scaled to a mean diagonal of 1: (n, F) -> (n, n) float64."""
    z = standardised(features)
    if z.shape[1] == 0:
        return np.zeros((len(z), len(z)))
    return (z @ z.T).astype(np.float64) / z.shape[1]


def partialled_out(kernel: np.ndarray, covariates: np.ndarray) -> np.ndarray:
    """The kernel of the features' residuals after OLS on an intercept and ``covariates`` (n, k): (I-H) K (I-H)."""
    basis, _ = np.linalg.qr(np.column_stack([np.ones(len(kernel)), covariates]))
    projected = kernel - basis @ (basis.T @ kernel)
    return projected - (projected @ basis) @ basis.T


def surface_kernel(baseline: np.ndarray) -> np.ndarray:
    """The baseline probe's kernel: the surface design, weakly penalised (``SURFACE_WEIGHT``), plus an intercept."""
    z = standardised(baseline)
    return SURFACE_WEIGHT * (z @ z.T).astype(np.float64) + INTERCEPT_WEIGHT


def view_kernel(features: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """A view's kernel with the surface design partialled out (its features' residuals on the baseline)."""
    return partialled_out(linear_kernel(features), standardised(baseline))


def layer_kernels(vectors: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Each layer's view kernel of its mean-pooled vectors: (n, L+1, D) -> (L+1, n, n)."""
    return np.stack([view_kernel(vectors[:, layer], baseline) for layer in range(vectors.shape[1])])


# --- labels ----------------------------------------------------------------------------------------


def length_bands(n_tokens: np.ndarray, bands: int) -> np.ndarray:
    """Each prompt's quantile band of token count (ties broken by order): (n,) int in 0..bands-1."""
    ranks = pd.Series(np.asarray(n_tokens, float)).rank(method="first").to_numpy()
    return np.minimum(((ranks - 1) * bands / len(ranks)).astype(int), bands - 1)


def permuted_within(labels: np.ndarray, bands: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``labels`` shuffled within each band: category sizes per band kept, any link beyond length broken."""
    shuffled = np.array(labels, copy=True)
    for band in np.unique(bands):
        where = np.flatnonzero(bands == band)
        shuffled[where] = labels[rng.permutation(where)]
    return shuffled


def control_labels(labels: np.ndarray, seed: int) -> np.ndarray:
    """The control task: random labels with the same class sizes (a fixed random permutation of ``labels``)."""
    return np.asarray(labels)[np.random.default_rng(seed).permutation(len(labels))]


# --- the probe -------------------------------------------------------------------------------------


def splits(labels: np.ndarray, settings: Settings) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds repeated over ``settings.repeats`` seeds (fewer folds if a category has fewer prompts)."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    folds = int(min(settings.folds, pd.Series(labels).value_counts().min()))
    if folds < 2:
        raise ValueError("a category has fewer than 2 prompts: no cross-validation possible")
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=settings.repeats, random_state=settings.seed)
    return list(splitter.split(np.zeros(len(labels)), labels))


def ridge_correct(
    kernels: list[np.ndarray], label_sets: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Cross-validated ridge classification: the share of repeats in which each prompt is predicted right.

    The probe is a ridge regression of one-hot labels on the features (scikit-learn's ``RidgeClassifier``
    with ``alpha=RIDGE``, written in its kernel form so that one factorisation per fold serves every label
    set: the real labels, the control task and all permutations). ``kernels``: K probes, each (n, n);
    ``label_sets``: (m, n), every set with the same categories; returns (K, m, n).
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
    """One model's test of one view: accuracies, gain over the surface, control gain, selectivity, p-values.

    ``baseline``: (n, k) surface design; ``view``: (n, n) the view's kernel (surface partialled out). The
    full probe's kernel is the baseline's plus the view's. ``p_permutation``: share of label permutations
    within length bands whose gain is at least the observed one (Phipson-Smyth); ``p_below_minimum``:
    one-sided t test over prompts that the gain is below ``MIN_GAIN`` (evidence against a signature).
    """
    rng = np.random.default_rng(settings.seed + 2)
    label_sets = np.stack(
        [labels, control_labels(labels, settings.seed + 1)]
        + [permuted_within(labels, bands, rng) for _ in range(settings.permutations)]
    )
    surface = surface_kernel(baseline)
    full, base = ridge_correct([surface + view, surface], label_sets, splits(labels, settings))
    gains = full.mean(axis=1) - base.mean(axis=1)  # (m,)
    gain, control_gain, null = float(gains[0]), float(gains[1]), gains[2:]
    difference = full[0] - base[0]
    n, sd = len(difference), float(difference.std(ddof=1))
    t = (difference.mean() - MIN_GAIN) / (sd / np.sqrt(n)) if sd > 0 else (-np.inf if gain < MIN_GAIN else np.inf)
    return {
        "accuracy": float(full[0].mean()),
        "surface_accuracy": float(base[0].mean()),
        "chance": float(pd.Series(labels).value_counts(normalize=True).max()),
        "gain": gain,
        "control_gain": control_gain,
        "selectivity": gain - control_gain,
        "gain_upper_95": float(difference.mean() + stats.t.ppf(0.95, n - 1) * sd / np.sqrt(n)) if sd > 0 else gain,
        "p_permutation": (1 + int(np.sum(null >= gain - 1e-12))) / (1 + len(null)),
        "p_below_minimum": float(stats.t.cdf(t, n - 1)),
    }


def layer_probes(baseline: np.ndarray, kernels: np.ndarray, labels: np.ndarray, settings: Settings) -> pd.DataFrame:
    """Per layer: accuracy of the surface design plus that layer's vectors, the surface-only accuracy, and both
    on the control task; selectivity = (accuracy - surface) - (control accuracy - control surface accuracy);
    ``over_embeddings``: accuracy minus layer 0's (the embedding output: mean-pooled, a bag of input tokens).

    ``kernels``: (L+1, n, n) from ``layer_kernels``.
    """
    surface = surface_kernel(baseline)
    label_sets = np.stack([labels, control_labels(labels, settings.seed + 1)])
    correct = ridge_correct([*(surface + k for k in kernels), surface], label_sets, splits(labels, settings))
    accuracy = correct.mean(axis=2)  # (L+2, 2)
    n_layers = len(kernels)
    table = pd.DataFrame(
        {
            "layer": np.arange(n_layers),
            "relative_depth": np.arange(n_layers) / max(n_layers - 1, 1),
            "accuracy": accuracy[:-1, 0],
            "surface_accuracy": accuracy[-1, 0],
            "control_accuracy": accuracy[:-1, 1],
            "control_surface_accuracy": accuracy[-1, 1],
        }
    )
    table["selectivity"] = (table["accuracy"] - table["surface_accuracy"]) - (
        table["control_accuracy"] - table["control_surface_accuracy"]
    )
    table["over_embeddings"] = table["accuracy"] - table["accuracy"].iloc[0]  # beyond the bag of input tokens
    table["chance"] = float(pd.Series(labels).value_counts(normalize=True).max())
    return table


def probe(settings: Settings) -> Any:
    """The probabilistic probe of the explorer and the cross-model transfer: standardise, then multinomial
    logistic regression (L2, lbfgs)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=settings.regularisation, max_iter=500, tol=1e-4))


# --- selective units -------------------------------------------------------------------------------


class UnitEffects:
    """Category-vs-rest effect sizes of every unit at equal token count, for any labelling of the prompts.

    ``values``: (n, U) units; ``covariates``: (n, k) length basis (an intercept is added). Each unit is
    residualised on the covariates once (OLS); ``of(labels)`` then compares each category's residual mean
    with the rest's (pooled SD; t with n - 2 - k degrees of freedom): Cohen's d and two-sided p, each (C, U),
    categories in ``np.unique(labels)`` order. Permutations reuse the residuals: two matrix products each.
    """

    def __init__(self, values: np.ndarray, covariates: np.ndarray) -> None:
        basis, _ = np.linalg.qr(np.column_stack([np.ones(len(values)), covariates]))
        values, basis = np.asarray(values, np.float32), basis.astype(np.float32)
        self.residual = values - basis @ (basis.T @ values)
        self.squares = self.residual**2
        self.total = self.residual.sum(axis=0, dtype=np.float64)
        self.total_squares = self.squares.sum(axis=0, dtype=np.float64)
        self.dof = max(len(values) - 2 - covariates.shape[1], 1)

    def of(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cohen's d and |t| of every category (vs the rest) and unit: each (C, U)."""
        categories = np.unique(labels)
        onehot = (labels[None, :] == categories[:, None]).astype(np.float32)  # (C, n)
        n_in = onehot.sum(axis=1, dtype=np.float64)[:, None]
        n_out = len(labels) - n_in
        sums = (onehot @ self.residual).astype(np.float64)
        squares = (onehot @ self.squares).astype(np.float64)
        mean_in, mean_out = sums / n_in, (self.total - sums) / n_out
        within = (squares - n_in * mean_in**2) + (self.total_squares - squares - n_out * mean_out**2)
        pooled = np.sqrt(np.maximum(within, 0) / self.dof)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(pooled > 0, (mean_in - mean_out) / pooled, 0.0)
        return d, np.abs(d) * np.sqrt(n_in * n_out / len(labels))


def selective_units(effects: UnitEffects, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which units are selective (some category with Benjamini-Hochberg q < ``ALPHA`` over every category and
    unit, and |d| >= ``MIN_UNIT_D``) and the category that owns each (largest |d| among those): (U,) bool and
    (U,) int (-1 where not selective).

    Only p-values below ``ALPHA`` can pass BH, so only those are computed and sorted (the same decisions as
    ``scipy.stats.false_discovery_control`` on all of them; a unit test checks it).
    """
    d, t = effects.of(labels)
    tests = t.size
    candidates = t > stats.t.isf(ALPHA / 2, effects.dof)
    p = 2 * stats.t.sf(t[candidates], effects.dof)
    ordered = np.sort(p)
    below = np.flatnonzero(ordered <= ALPHA * np.arange(1, len(ordered) + 1) / tests)
    threshold = ordered[below[-1]] if len(below) else -1.0
    passing = np.zeros(t.shape, bool)
    passing[candidates] = p <= threshold
    passing &= np.abs(d) >= MIN_UNIT_D
    owner = np.where(passing, np.abs(d), -1.0).argmax(axis=0)
    selective = passing.any(axis=0)
    return selective, np.where(selective, owner, -1)


def unit_selectivity(
    vectors: np.ndarray, labels: np.ndarray, n_tokens: np.ndarray, settings: Settings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Selective units per layer against their label-permutation null, and the categories that own them.

    ``vectors``: (n, L+1, D). FDR is controlled over every layer, unit and category of the model at once; the
    null permutes labels within length bands. Returns (per layer: units, selective, share, null mean, null 95%
    quantile, p) and (per category: selective units it owns).
    """
    n, n_layers, width = vectors.shape
    effects = UnitEffects(np.asarray(vectors, np.float32).reshape(n, n_layers * width), length_basis(n_tokens))
    selective, owner = selective_units(effects, labels)
    observed = selective.reshape(n_layers, width).sum(axis=1)
    rng = np.random.default_rng(settings.seed + 3)
    bands = length_bands(n_tokens, settings.length_bands)
    null = np.zeros((settings.unit_permutations, n_layers))
    for draw in range(settings.unit_permutations):
        shuffled = selective_units(effects, permuted_within(labels, bands, rng))[0]
        null[draw] = shuffled.reshape(n_layers, width).sum(axis=1)
    empty = settings.unit_permutations == 0
    per_layer = pd.DataFrame(
        {
            "layer": np.arange(n_layers),
            "relative_depth": np.arange(n_layers) / max(n_layers - 1, 1),
            "units": width,
            "selective": observed,
            "share": observed / width,
            "null_mean": np.full(n_layers, np.nan) if empty else null.mean(axis=0),
            "null_q95": np.full(n_layers, np.nan) if empty else np.quantile(null, 0.95, axis=0),
            "p_value": (1 + (null >= observed).sum(axis=0)) / (1 + settings.unit_permutations),
        }
    )
    categories = np.unique(labels)
    owned = pd.Series(owner[owner >= 0]).value_counts().reindex(range(len(categories)), fill_value=0)
    owners = pd.DataFrame({"category": categories, "selective_units": owned.to_numpy()})
    return per_layer, owners.sort_values("selective_units", ascending=False, kind="stable").reset_index(drop=True)


# --- one model, a run ------------------------------------------------------------------------------


@dataclass
class ModelSignatures:
    """One model's results: its tests (one row per kind), per-layer probes, selective units and their owners."""

    tests: pd.DataFrame
    probes: pd.DataFrame
    units: pd.DataFrame
    owners: pd.DataFrame


def analyse_model(
    prompts: pd.DataFrame,
    profiles: np.ndarray,
    vectors: np.ndarray,
    settings: Settings = Settings(),  # noqa: B008 (frozen)
    *,
    units: bool = True,
) -> ModelSignatures:
    """Every signature of one model.

    ``prompts``: its prompt table (category and the surface columns of ``surface_table``), in the order of
    ``profiles`` (n, F: ``metric_profiles``) and ``vectors`` (n, L+1, D: the mean-pooled hidden states).
    """
    labels = prompts["category"].to_numpy()
    surface = surface_table(prompts)
    baseline = surface_basis(surface)
    bands = length_bands(surface["n_tokens"].to_numpy(), settings.length_bands)
    kernels = layer_kernels(vectors, baseline)
    views = {"scalar": view_kernel(profiles, baseline), "representational": kernels.mean(axis=0)}
    rows = [
        {
            "kind": kind,
            "n_prompts": len(labels),
            "min_per_category": int(pd.Series(labels).value_counts().min()),
            **signature_test(baseline, view, labels, bands, settings),
        }
        for kind, view in views.items()
    ]
    probes = layer_probes(baseline, kernels, labels, settings)
    if units:
        per_layer, owners = unit_selectivity(vectors, labels, surface["n_tokens"].to_numpy(), settings)
    else:
        per_layer, owners = pd.DataFrame(), pd.DataFrame()
    return ModelSignatures(pd.DataFrame(rows), probes, per_layer, owners)


def transfer(profiles: dict[str, np.ndarray], labels: np.ndarray, settings: Settings = Settings()) -> pd.DataFrame:  # noqa: B008
    """Does a probe trained on one model's standardised metric profile decode another's? A fact, not a verdict.

    ``profiles``: model -> (n, F) from ``profile_on_grid``, all on the same prompts in the same order.
    One row per ordered pair: accuracy, chance (largest class share) and a one-sided binomial p against it.
    """
    chance = float(pd.Series(labels).value_counts(normalize=True).max())
    rows = []
    for trained, source in profiles.items():
        fitted = probe(settings).fit(source, labels)
        for tested, target in profiles.items():
            if tested == trained:
                continue
            hits = int((fitted.predict(target) == labels).sum())
            rows.append(
                {
                    "trained_on": trained,
                    "tested_on": tested,
                    "accuracy": hits / len(labels),
                    "chance": chance,
                    "p_above_chance": float(stats.binomtest(hits, len(labels), chance, "greater").pvalue),
                }
            )
    return pd.DataFrame(rows, columns=["trained_on", "tested_on", "accuracy", "chance", "p_above_chance"])


# --- a run -----------------------------------------------------------------------------------------


@dataclass
class RunSignatures:
    """Notebook 08's results: per-model tests and verdicts, per-layer probes and units, owners, transfer."""

    tests: pd.DataFrame
    probes: pd.DataFrame
    units: pd.DataFrame
    owners: pd.DataFrame
    transfer: pd.DataFrame
    sizes: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def load_model_inputs(params: Any, model: str) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """One model's prompt table, per-layer table and (n, L+1, D) vectors, verified (intact, and made for this run
    and model), in prompt-table order."""
    from helpers.study import made_for

    identity = made_for(params, model)
    prompts = store.at_measurement_precision(store.read_table(params.activations_path(model), identity))
    layers = store.at_measurement_precision(store.read_table(params.activations_path(model, "layers"), identity))
    ids, vectors = store.read_vectors(params.activations_path(model, "vectors"), identity)
    order = pd.Series(range(len(ids)), index=ids).reindex(prompts["prompt_id"]).to_numpy()
    return prompts, layers, vectors[order]


def analyse_run(params: Any, settings: Settings = Settings()) -> RunSignatures:  # noqa: B008
    """Every model of a run (``params``: ``study.StudyParams``): tests, per-layer tables, transfer, sizes."""
    tests, probes, units, owners, grids, sizes = [], [], [], [], {}, []
    labels = None
    for model in params.models:
        prompts, layers, vectors = load_model_inputs(params, model)
        name = store.read_metadata(params.activations_path(model))["model"].get("display_name", model)
        result = analyse_model(prompts, metric_profiles(prompts, layers), vectors, settings)
        tests.append(result.tests.assign(model=name))
        probes.append(result.probes.assign(model=name))
        units.append(result.units.assign(model=name))
        owners.append(result.owners.assign(model=name))
        grids[name] = profile_on_grid(prompts, layers)
        labels = prompts["category"].to_numpy() if labels is None else labels
        sizes.append(
            {
                "model": name,
                "prompts": vectors.shape[0],
                "layers": vectors.shape[1],
                "hidden_size": vectors.shape[2],
                # the stored array's size; the compressed file's size depends on the values' last bits
                "bytes": int(np.prod(vectors.shape)) * np.dtype(store.VECTOR_DTYPE).itemsize,
            }
        )

    def first(frames: list[pd.DataFrame]) -> pd.DataFrame:
        table = pd.concat(frames, ignore_index=True)
        return table[["model", *[c for c in table.columns if c != "model"]]] if "model" in table else table

    result = RunSignatures(
        first(tests), first(probes), first(units), first(owners), transfer(grids, labels, settings), pd.DataFrame(sizes)
    )
    result.tables = {
        "signature_tests": result.tests,
        "signature_verdicts": model_verdicts(result.tests),
        "signature_probes": result.probes,
        "signature_units": result.units,
        "signature_unit_owners": result.owners,
        "signature_transfer": result.transfer,
        "signature_sizes": result.sizes,
    }
    return result


def transfer_fact(table: pd.DataFrame) -> str:
    """The cross-model transfer in one sentence (a fact about these models, not a verdict)."""
    if table.empty:
        return "Only one model: no transfer between models to report."
    above = int((table["p_above_chance"] < ALPHA).sum())
    return (
        f"A probe trained on one model's standardised metric profile decodes another model's prompts with mean "
        f"accuracy {significant(table['accuracy'].mean(), 2)} (chance {significant(table['chance'].iloc[0], 2)}); "
        f"{above} of {len(table)} ordered model pairs are above chance (one-sided binomial test, {ALPHA:.0%}, "
        "uncorrected). A fact about these models, not a verdict."
    )


# --- the explorer ----------------------------------------------------------------------------------


def category_probabilities(
    prompts: pd.DataFrame,
    vectors: np.ndarray,
    new_prompt: pd.DataFrame,
    new_vectors: np.ndarray,
    settings: Settings = Settings(),  # noqa: B008
) -> pd.DataFrame:
    """For a new prompt, each layer's probe (surface + that layer) and the surface-only probe: category
    probabilities, fitted on a run's prompts of one model.

    ``prompts``/``vectors``: the run's prompt table and (n, L+1, D) vectors; ``new_prompt``: one row with
    the prompt-table columns ``surface_table`` reads; ``new_vectors``: (L+1, D). Returns one row per probe
    (``layer``; -1 = surface only) and category: ``probability``.
    """
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = prompts["category"].to_numpy()
    both = pd.concat([prompts, new_prompt], ignore_index=True)
    baseline = surface_basis(surface_table(both))
    rows = []
    surface_probe = probe(settings).fit(baseline[:-1], labels)
    for category, value in zip(surface_probe.classes_, surface_probe.predict_proba(baseline[-1:])[0], strict=True):
        rows.append({"layer": -1, "category": category, "probability": value})
    for layer in range(vectors.shape[1]):
        reducer = make_pipeline(StandardScaler(), PCA(n_components=min(settings.components, len(labels) - 1)))
        reduced = reducer.fit_transform(np.asarray(vectors[:, layer], np.float32))
        new = reducer.transform(np.asarray(new_vectors[None, layer], np.float32))
        fitted = probe(settings).fit(np.column_stack([baseline[:-1], reduced]), labels)
        probabilities = fitted.predict_proba(np.column_stack([baseline[-1:], new]))[0]
        rows.extend(
            {"layer": layer, "category": c, "probability": p}
            for c, p in zip(fitted.classes_, probabilities, strict=True)
        )
    return pd.DataFrame(rows)
