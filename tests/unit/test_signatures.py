"""Finding 5 (activation signatures) on synthetic data with planted truths, and its building blocks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from helpers.base import store
from helpers.stats import findings
from helpers.stats.findings import DOES_NOT_HOLD, HOLDS, NOT_TESTABLE, finding5, rules, signatures
from helpers.stats.robustness import StudyData

FAST = signatures.Settings(folds=4, repeats=1, permutations=59, unit_permutations=5)
"""Small enough for make test; 59 permutations still allow p < 0.025 (the rule's level per view)."""


def synthetic(
    seed: int, *, planted: float = 0.0, surface_only: bool = False, per_category: int = 20, categories: int = 6
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """A model's prompt table, metric profiles (n, 10) and vectors (n, 4, 32) with a chosen truth.

    Categories differ in length and digits (the surface carries signal). ``planted``: a category direction of
    that size (in noise SDs) in layers 2-3; ``surface_only``: vectors and profiles carry length (log tokens) and
    digits, nothing else.
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat([f"cat{i}" for i in range(categories)], per_category)
    index = pd.factorize(labels)[0]
    n_tokens = rng.integers(8, 40, len(labels)) + 3 * index
    digits = rng.poisson(np.where(index == 0, 5.0, 0.5))
    prompts = pd.DataFrame(
        {
            "prompt_id": [f"p{i}" for i in range(len(labels))],
            "category": labels,
            "n_tokens": n_tokens,
            "n_words": np.maximum(1, (n_tokens * rng.uniform(0.6, 0.9, len(labels))).astype(int)),
            "n_digits": digits,
            "text": ["Why?" if rng.random() < 0.5 else "Say it." for _ in labels],
        }
    )
    vectors = rng.standard_normal((len(labels), 4, 32)).astype(np.float32)
    profiles = rng.standard_normal((len(labels), 10))
    if planted:
        directions = rng.standard_normal((categories, 32))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        vectors[:, 2:] += planted * directions[index][:, None, :]
    if surface_only:
        length, digit = np.log(n_tokens)[:, None], np.sqrt(digits)[:, None]
        vectors += (3 * length * rng.standard_normal(32) + 3 * digit * rng.standard_normal(32))[:, None, :]
        profiles += 3 * length * rng.standard_normal(10) + 3 * digit * rng.standard_normal(10)
    return prompts, profiles, vectors.astype(np.float16)


def run_tests(seed: int, models: int = 2, **truth: float | bool) -> pd.DataFrame:
    """Per-model tests of ``models`` synthetic models with the same truth (finding 5's input)."""
    frames = []
    for model in range(models):
        prompts, profiles, vectors = synthetic(1000 * seed + model, **truth)
        result = signatures.analyse_model(prompts, profiles, vectors, FAST, units=False)
        frames.append(result.tests.assign(model=f"m{model}"))
    return pd.concat(frames, ignore_index=True)


FINDING = finding5.ActivationSignatures()


def test_finding_5_is_in_the_findings_once_with_its_rule_stated() -> None:
    assert [finding.number for finding in findings.FINDINGS] == [1, 2, 3, 4, 5]
    assert isinstance(findings.FINDINGS[4], finding5.ActivationSignatures)
    assert "Finding 5" in findings.rules_markdown() and f"{finding5.MIN_GAIN:.0%}" in FINDING.minimum_effect


def test_no_signature_rarely_holds() -> None:
    verdicts = [FINDING.judge(run_tests(seed)).verdict for seed in range(20)]
    per_model = pd.concat([finding5.model_verdicts(run_tests(seed, models=1)) for seed in range(20, 40)])
    assert verdicts.count(HOLDS) <= 1  # at most 5% of 20 runs
    assert (per_model["verdict"] == HOLDS).sum() <= 1  # and of 20 single models


def test_a_planted_category_direction_holds() -> None:
    for seed in range(3):
        tests = run_tests(seed, planted=1.5)
        assessment = FINDING.judge(tests)
        assert assessment.verdict == HOLDS, assessment.evidence
        representational = tests[tests["kind"] == "representational"]
        assert (representational["selectivity"] >= finding5.MIN_GAIN).all()


def test_a_signature_carried_only_by_length_or_digits_never_holds() -> None:
    for seed in range(10):
        tests = run_tests(seed, surface_only=True)
        assert FINDING.judge(tests).verdict != HOLDS
        assert (tests["surface_accuracy"] > tests["chance"] + 0.05).all()  # the surface does carry the categories


def test_no_signature_at_all_says_does_not_hold_with_enough_prompts() -> None:
    frames = []
    for model in range(2):
        prompts, profiles, vectors = synthetic(model, per_category=60)
        frames.append(signatures.analyse_model(prompts, profiles, vectors, FAST, units=False).tests.assign(model=model))
    assert FINDING.judge(pd.concat(frames)).verdict == DOES_NOT_HOLD


def test_not_testable_without_vectors_or_with_too_few_prompts() -> None:
    metrics = pd.DataFrame(
        {
            "display_name": ["A"] * 2,
            "model": ["a"] * 2,
            "architecture": ["decoder"] * 2,
            "n_parameters": [1] * 2,
            "prompt_id": ["p1", "p2"],
            "category": ["x", "y"],
            "final_activation": [0.1, 0.2],
        }
    )
    data = StudyData.from_metrics(metrics, samples=10, seed=0)
    assert FINDING.assess(data).verdict == NOT_TESTABLE
    data.cache[finding5.CACHE_KEY] = run_tests(0).assign(min_per_category=2)
    assessment = FINDING.assess(data)
    assert assessment.verdict == NOT_TESTABLE and "fewest: 2" in assessment.why_not_testable


def test_the_kernel_probe_is_scikit_learns_ridge_classifier() -> None:
    from sklearn.linear_model import RidgeClassifier

    rng = np.random.default_rng(0)
    features = rng.standard_normal((60, 5))
    labels = np.repeat(["a", "b", "c"], 20)
    labels_sets = np.stack([labels, rng.permutation(labels)])
    everyone = np.arange(60)
    folds = [(np.setdiff1d(everyone, test), test) for test in np.array_split(rng.permutation(60), 3)]
    correct = signatures.ridge_correct([features @ features.T], labels_sets, folds)[0]
    for row, target in enumerate(labels_sets):
        expected = np.zeros(60)
        for train, test in folds:
            fitted = RidgeClassifier(alpha=signatures.RIDGE, fit_intercept=False).fit(features[train], target[train])
            expected[test] += fitted.predict(features[test]) == target[test]
        assert np.array_equal(correct[row], expected)


def test_selective_units_agree_with_scipys_benjamini_hochberg() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat(["a", "b", "c"], 30)
    values = rng.standard_normal((90, 400)).astype(np.float32)
    values[:, :20] += 1.5 * (labels == "b")[:, None]  # 20 units selective for b
    n_tokens = rng.integers(5, 50, 90)
    effects = signatures.UnitEffects(values, signatures.length_basis(n_tokens))
    selective, owner = signatures.selective_units(effects, labels)
    d, t = effects.of(labels)
    q = stats.false_discovery_control(2 * stats.t.sf(t, effects.dof).reshape(-1)).reshape(t.shape)
    expected = ((q < rules.ALPHA) & (np.abs(d) >= signatures.MIN_UNIT_D)).any(axis=0)
    assert np.array_equal(selective, expected)
    assert selective[:20].all() and selective[20:].sum() <= 2 and (owner[:20] == 1).all()


def test_permutations_within_length_bands_keep_each_bands_categories() -> None:
    rng = np.random.default_rng(2)
    labels = np.repeat(["a", "b", "c", "d"], 25)
    n_tokens = rng.integers(5, 60, 100)
    bands = signatures.length_bands(n_tokens, 5)
    shuffled = signatures.permuted_within(labels, bands, rng)
    assert not np.array_equal(shuffled, labels)
    for band in range(5):
        assert sorted(shuffled[bands == band]) == sorted(labels[bands == band])


def test_stored_vectors_round_trip_and_a_changed_value_is_caught(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.random.default_rng(3).standard_normal((4, 3, 5)).astype(np.float16)
    path = store.write_vectors(["a", "b", "c", "d"], vectors, tmp_path / "v.parquet", {"note": 1})
    ids, back = store.read_vectors(path)
    assert ids == ["a", "b", "c", "d"] and back.dtype == np.float16 and np.array_equal(back, vectors)
    table = pq.read_table(path)
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False).copy()
    flat[7] += np.float16(0.5)
    column = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float16()), 15)
    pq.write_table(table.set_column(1, "vector", column), path)
    with pytest.raises(store.StoredTableError, match="content hash"):
        store.read_vectors(path)


def test_a_value_beyond_float16s_range_is_clipped_and_counted_never_stored_as_inf(tmp_path) -> None:
    vectors = np.array([[[1.0, 1e6, -2e5, np.nan]]], dtype=np.float32)
    with pytest.warns(UserWarning, match="2 value"):
        path = store.write_vectors(["a"], vectors, tmp_path / "v.parquet")
    _, back = store.read_vectors(path)
    assert back[0, 0, 1] == 65504 and back[0, 0, 2] == -65504 and np.isnan(back[0, 0, 3])
    assert store.read_metadata(path)["saturated_values"] == 2
