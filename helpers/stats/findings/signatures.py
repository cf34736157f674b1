"""Finding 5's analysis of a run (notebook 08): every model's test beyond the words (``beyond_words``), its
per-layer probes and selective units (``units``), the cross-model transfer of the paper's metric profiles, and what
the stored vectors cost; and the explorer's category probabilities for a new prompt.

Prompts are the replicates within a model; models are the replicates for "across architectures". The rule that
decides from the per-model tests, ``ActivationSignatures``, is stated before any data are seen in ``finding5``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from helpers.base import store
from helpers.stats.findings import beyond_words, finding5, finding5_earlier, units, views
from helpers.stats.findings.finding5 import Settings, model_verdicts
from helpers.stats.findings.rules import ALPHA, holm, significant
from helpers.stats.robustness import single_threaded_blas
from helpers.study import reproduction


def probe(settings: Settings) -> Any:
    """The probabilistic probe of the explorer and the cross-model transfer: standardise, then multinomial
    logistic regression (L2, lbfgs)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=settings.regularisation, max_iter=500, tol=1e-4))


# --- one model, a run ------------------------------------------------------------------------------


@dataclass
class ModelSignatures:
    """One model's results: its tests (one row per probe), per-layer probes, selective units and their owners."""

    tests: pd.DataFrame
    probes: pd.DataFrame
    units: pd.DataFrame
    owners: pd.DataFrame
    earlier: pd.DataFrame  # the earlier rule's tests (finding5_earlier), for the deviations log


@single_threaded_blas  # small matrices: BLAS threads only contend on a busy machine
def analyse_model(
    prompts: pd.DataFrame,
    profiles: np.ndarray,
    vectors: np.ndarray,
    settings: Settings = Settings(),  # noqa: B008 (frozen)
    *,
    random_vectors: np.ndarray | None = None,
    with_units: bool = True,
) -> ModelSignatures:
    """Every signature of one model.

    ``prompts``: its prompt table (category, text and the surface columns of ``views.surface_table``), in the order
    of ``profiles`` (n, F: ``views.metric_profiles``), ``vectors`` (n, L+1, D: the mean-pooled hidden states) and
    ``random_vectors`` (the same from a random-weights copy of the architecture, or None).
    """
    test = beyond_words.test_model(prompts, profiles, vectors, settings)
    if with_units:
        labels = prompts["category"].to_numpy()
        n_tokens = prompts["n_tokens"].to_numpy()
        per_layer, owners = units.unit_selectivity(vectors, labels, n_tokens, settings, random_vectors)
    else:
        per_layer, owners = pd.DataFrame(), pd.DataFrame()
    earlier = finding5_earlier.model_tests(prompts, profiles, vectors, settings)
    return ModelSignatures(test.tests, test.layers, per_layer, owners, earlier)


def transfer(
    profiles: dict[str, np.ndarray],
    labels: np.ndarray,
    settings: Settings = Settings(),  # noqa: B008 (frozen)
) -> pd.DataFrame:
    """Does a probe trained on one model's standardised metric profile decode another's? Cross-fitted: the probe is
    trained on one model's profiles of a fold's training prompts and tested on another model's profiles of its
    test prompts (stratified folds, one repeat: each prompt predicted once). A fact, not a verdict.

    ``profiles``: model -> (n, F) from ``views.profile_on_grid``, all on the same prompts in the same order. One row
    per ordered pair: accuracy, chance (largest class share), a one-sided binomial p against it and its Holm
    adjustment over every ordered pair; and each source model's own cross-validated accuracy (``within``).
    """
    columns = ["trained_on", "tested_on", "accuracy", "within", "chance", "p_above_chance", "p_holm"]
    if len(profiles) < 2:
        return pd.DataFrame(columns=columns)
    chance = float(pd.Series(labels).value_counts(normalize=True).max())
    folds = views.splits(labels, Settings(folds=settings.folds, repeats=1, seed=settings.seed))
    names = list(profiles)
    hits = pd.DataFrame(0, index=names, columns=names)
    for train, test in folds:
        for trained in names:
            fitted = probe(settings).fit(profiles[trained][train], labels[train])
            for tested in names:
                hits.loc[trained, tested] += int((fitted.predict(profiles[tested][test]) == labels[test]).sum())
    rows = [
        {
            "trained_on": trained,
            "tested_on": tested,
            "accuracy": hits.loc[trained, tested] / len(labels),
            "within": hits.loc[trained, trained] / len(labels),
            "chance": chance,
            "p_above_chance": float(
                stats.binomtest(int(hits.loc[trained, tested]), len(labels), chance, "greater").pvalue
            ),
        }
        for trained in names
        for tested in names
        if tested != trained
    ]
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p_above_chance"].tolist())
    return table[columns]


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
    earlier: pd.DataFrame  # the earlier rule's per-model tests (finding5_earlier)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def load_model_inputs(params: Any, model: str) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """One model's prompt table, per-layer table and (n, L+1, D) vectors, verified (intact, and made for this run
    and model), in prompt-table order."""
    from helpers.study import made_for

    identity = made_for(params, model)
    prompts = store.at_measurement_precision(store.read_table(params.activations_path(model), identity))
    layers = store.at_measurement_precision(store.read_table(params.activations_path(model, "layers"), identity))
    return prompts, layers, vectors_in_order(params.activations_path(model, "vectors"), prompts, identity)


def vectors_in_order(path: Any, prompts: pd.DataFrame, identity: Any = None) -> np.ndarray:
    """A stored vector file's (n, L+1, D) array, verified, in the prompt table's order (every prompt needed)."""
    ids, vectors = store.read_vectors(path, identity)
    missing = sorted(set(prompts["prompt_id"]) - set(ids))
    if missing:
        raise store.StoredTableError(f"{path} lacks the vectors of prompt(s) {missing[:5]}")
    order = pd.Series(range(len(ids)), index=ids).reindex(prompts["prompt_id"]).to_numpy()
    return vectors[order]


def random_copy_vectors(params: Any, model: str, prompts: pd.DataFrame) -> np.ndarray:
    """The vectors of ``model``'s random-weights copy (collected beside its own, ``helpers.study.collection``),
    verified and in prompt-table order."""
    from helpers.study import made_for

    return vectors_in_order(params.activations_path(model, "random_vectors"), prompts, made_for(params, model))


def analyse_run(params: Any, settings: Settings = Settings()) -> RunSignatures:  # noqa: B008
    """Every model of a run (``params``: ``study.StudyParams``): tests, per-layer tables, transfer, sizes."""
    tests, probes, unit_tables, owners, earlier, grids, sizes = [], [], [], [], [], {}, []
    labels = None
    for model in params.models:
        prompts, layers, vectors = load_model_inputs(params, model)
        name = store.read_metadata(params.activations_path(model))["model"].get("display_name", model)
        result = analyse_model(
            prompts,
            views.metric_profiles(prompts, layers),
            vectors,
            settings,
            random_vectors=random_copy_vectors(params, model, prompts),
        )
        tests.append(result.tests.assign(model=name))
        probes.append(result.probes.assign(model=name))
        unit_tables.append(result.units.assign(model=name))
        owners.append(result.owners.assign(model=name))
        earlier.append(result.earlier.assign(model=name))
        grids[name] = views.profile_on_grid(prompts, layers)
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

    if labels is None:
        raise ValueError("a run of no models has no activation signatures")
    result = RunSignatures(
        first(tests),
        first(probes),
        first(unit_tables),
        first(owners),
        transfer(grids, labels, settings),
        pd.DataFrame(sizes),
        first(earlier),
    )
    result.tables = {
        "signature_tests": result.tests,
        "signature_verdicts": model_verdicts(result.tests),
        "signature_probes": result.probes,
        "signature_units": result.units,
        "signature_unit_owners": result.owners,
        "signature_transfer": result.transfer,
        "signature_sizes": result.sizes,
        "signature_earlier_rule": finding5_earlier.model_verdicts(result.earlier),
    }
    return result


DOCS_START, DOCS_END = "<!-- signatures-results:start -->", "<!-- signatures-results:end -->"
"""The markers of docs/signatures.md's section that notebook 08 writes from the default run's tables."""


def quote_in_docs(verdicts: pd.DataFrame, docs: Path, source: str, check: reproduction.Check | None = None) -> bool:
    """Replace docs/signatures.md's results section (between ``DOCS_START`` and ``DOCS_END``) with the default run's
    answer and per-model table; False if the markers are missing. With a ``check``, a section that the new one
    is already what this run makes is left as it is (as the README's scorecard)."""
    text = docs.read_text(encoding="utf-8") if docs.is_file() else ""
    if DOCS_START not in text or DOCS_END not in text:
        return False
    columns = {
        "model": "model",
        "lexical_accuracy": "words alone",
        "layer0_accuracy": "layer 0",
        "layers_accuracy": "later layers",
        "gain_beyond_words": "gain beyond the words",
        "gain_low": "95% CI low",
        "gain_high": "95% CI high",
        "verdict": "verdict",
    }
    shown = verdicts[list(columns)].rename(columns=columns)
    section = (
        f"\n<!-- generated by {source} from paper/tables/signature_verdicts.csv; do not edit by hand -->\n\n"
        f"{finding5.beyond_words_sentence(verdicts)}\n\n{store.markdown_table(shown, floatfmt='.3g')}\n\n"
    )
    markers = (DOCS_START, DOCS_END)
    comparison = check.section("docs/signatures.md results", docs, markers, section) if check is not None else None
    if comparison is None or not comparison.reproduced:
        store.write_between_markers(docs, DOCS_START, DOCS_END, section)
    if check is not None and comparison is not None:
        check.add(comparison, [docs])
    return True


def transfer_fact(table: pd.DataFrame) -> str:
    """The cross-model transfer in one sentence (a fact about these models, not a verdict)."""
    if table.empty:
        return "Only one model: no transfer between models to report."
    above = int((table["p_holm"] < ALPHA).sum())
    return (
        f"A probe trained on one model's standardised metric profile (cross-fitted: trained and tested on different "
        f"prompts) decodes another model's prompts with mean accuracy {significant(table['accuracy'].mean(), 2)} "
        f"(chance {significant(table['chance'].iloc[0], 2)}; the same probe within a model: "
        f"{significant(table.drop_duplicates('trained_on')['within'].mean(), 2)}); {above} of {len(table)} ordered "
        f"model pairs are above chance (one-sided binomial test, Holm over all pairs, {ALPHA:.0%}). A fact about "
        "these models, not a verdict."
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
    baseline = views.surface_basis(views.surface_table(both))
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
