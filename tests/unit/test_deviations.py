"""The deviations log is true to the repository's history, and every earlier rule in it runs.

Each entry's commits exist, the change was committed on the entry's date, after what had been seen (which is what
that commit holds); the earlier rules kept runnable give the verdicts the rules of their time gave (finding 1: the
code of that time, run from the history); the table notebook 06 exports computes every verdict on any run.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers.base import paths
from helpers.stats import findings
from helpers.stats.findings import (
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    NOT_TESTABLE,
    VERDICTS,
    deviations,
    finding1,
    finding2,
)
from helpers.stats.findings.deviations import DEVIATIONS
from helpers.stats.robustness import MATH, StudyData
from tests.support import synthetic


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=paths.ROOT, capture_output=True, text=True, check=True, timeout=60).stdout


def history() -> bool:
    """Whether this copy has the repository's history back to the first deviation's data."""
    try:
        git("cat-file", "-e", f"{DEVIATIONS[0].seen_commit}^{{commit}}")
        return True
    except (OSError, subprocess.SubprocessError):
        return False


needs_history = pytest.mark.skipif(not history(), reason="this copy has no git history with the logged commits")


@needs_history
@pytest.mark.parametrize("deviation", DEVIATIONS, ids=lambda d: f"{d.commit}-finding{d.findings}")
def test_each_entry_is_in_the_history_on_its_date_after_what_had_been_seen(deviation: deviations.Deviation) -> None:
    assert git("show", "-s", "--format=%ad", "--date=short", deviation.commit).strip() == deviation.date
    ancestor = subprocess.run(
        ["git", "merge-base", "--is-ancestor", deviation.seen_commit, deviation.commit], cwd=paths.ROOT, timeout=60
    )
    assert ancestor.returncode == 0, f"{deviation.seen_commit} was not committed before {deviation.commit}"
    seen_params = yaml.safe_load(git("show", f"{deviation.seen_commit}:params/default.yaml"))
    assert tuple(seen_params["models"]) == deviation.seen_models


@needs_history
def test_what_had_been_seen_is_what_those_commits_hold() -> None:
    first, second, third, fourth = DEVIATIONS[:4]
    per_model = pd.read_csv(io.StringIO(git("show", f"{first.seen_commit}:paper/tables/finding1_per_model.csv")))
    assert len(per_model) == 3 and (per_model["verdict"] == INCONCLUSIVE).all()
    assert "inconclusive in each of the three models" in first.seen
    scorecard = pd.read_csv(io.StringIO(git("show", f"{second.seen_commit}:paper/tables/findings_scorecard.csv")))
    row = scorecard.set_index("finding").loc[2]
    assert row["verdict"] == NOT_TESTABLE and "1 encoder and 2 decoders" in row["testable_here"]
    assert "not testable (1 encoder, 2 decoders)" in second.seen
    hoyer = [float(v) for v in pd.Series(row["evidence_this_run"]).str.findall(r"Hoyer ([0-9.]+)")[0]]
    s_max = [float(v) for v in pd.Series(row["evidence_this_run"]).str.findall(r"\|h\| < 0.01 ([0-9.]+)")[0]]
    assert min(hoyer) > 1 and min(s_max) < 1 < max(s_max)  # both above on Hoyer, on both sides on S_max
    signatures = git("show", f"{third.seen_commit}:docs/signatures.md")
    assert "finding 5 **holds**" in signatures and "180 prompts" in signatures
    # the change itself: the earlier rule at the seen commit, the registered one at the change
    before = git("show", f"{first.seen_commit}:helpers/findings.py")
    assert "minimum = 0.5 * result.residual_sd" in before and 'PRIMARY_SPARSITY = "max_hoyer_sparsity"' in before
    changed = git("show", f"{first.commit}:helpers/findings.py")
    assert 'PRIMARY_SPARSITY = "max_sparsity"' in changed and "minimum = 0.5 * result.residual_sd" not in changed
    assert "test_finding1_a_category_above_math_refutes_it" in git(
        "show", f"{first.commit}:tests/unit/test_calibration.py"
    )
    eight = pd.read_csv(io.StringIO(git("show", f"{fourth.seen_commit}:paper/tables/findings_scorecard.csv")))
    verdicts = dict(zip(eight["finding"], eight["verdict"], strict=True))
    assert (
        fourth.seen.endswith(
            f"finding 1 {verdicts[1]}, findings 2 and 4 {verdicts[2]}, finding 3 {verdicts[3]}, finding 5 {verdicts[5]}"
        )
        and verdicts[2] == verdicts[4]
    )
    registered = git("show", f"{third.commit}:paper/preregistered_rules.md")
    assert "Finding 5" in registered and "Finding 5" not in git("show", f"{third.commit}^:paper/preregistered_rules.md")


@needs_history
def test_what_entry_7_had_seen_is_what_its_commit_holds_and_the_earlier_rule_was_the_code_that_ran() -> None:
    seventh = DEVIATIONS[6]
    nine = pd.read_csv(io.StringIO(git("show", f"{seventh.seen_commit}:paper/tables/signature_verdicts.csv")))
    verdicts = dict(zip(nine["model"], nine["verdict"], strict=True))
    assert verdicts["Qwen2.5-Coder-1.5B-Instruct"] == HOLDS and verdicts["paraphrase-MiniLM-L3-v2"] == DOES_NOT_HOLD
    assert sum(v == INCONCLUSIVE for v in verdicts.values()) == 7 and "inconclusive in the other seven" in seventh.seen
    row = nine.set_index("model").loc["Qwen2.5-Coder-1.5B-Instruct"]
    assert (
        f"+{100 * row['gain_beyond_words']:.1f} points [{100 * row['gain_low']:.1f}, {100 * row['gain_high']:.1f}]"
        in (seventh.seen)
    )
    ran = git("show", f"{seventh.commit}^:helpers/stats/findings/finding5.py")
    assert 'found = deciding[deciding["gain"] >= MIN_GAIN]' in ran and 'found["p_above"]' in ran
    registered = git("show", f"{seventh.commit}^:paper/preregistered_rules.md")
    assert "its gain over the stronger baseline is at least the minimum effect" in registered


@needs_history
def test_what_entry_8_had_seen_is_what_its_commit_holds_and_only_the_text_changed() -> None:
    eighth = DEVIATIONS[7]
    nine = pd.read_csv(io.StringIO(git("show", f"{eighth.seen_commit}:paper/tables/signature_verdicts.csv")))
    verdicts = dict(zip(nine["model"], nine["verdict"], strict=True))
    assert verdicts["paraphrase-MiniLM-L3-v2"] == DOES_NOT_HOLD and "paraphrase-MiniLM-L3-v2" in eighth.seen
    assert sum(v == INCONCLUSIVE for v in verdicts.values()) == 8 and "inconclusive in the other eight" in eighth.seen
    changed = git("diff", f"{eighth.commit}^", eighth.commit, "--name-only", "--", "helpers").split()
    assert changed == ["helpers/stats/findings/finding5.py"] and eighth.earlier is None
    diff = git("diff", f"{eighth.commit}^", eighth.commit, "--", "helpers/stats/findings/finding5.py")
    edited = [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    marks = ("Negative controls", "TEXT_ONLY_VIEWS", "hashed")
    assert edited and all(any(mark in line for mark in marks) for line in edited)


def run_code_of(commit: str, script: str, folder: Path) -> object:
    """``script`` run with the package as it was at ``commit`` (from the history, in ``folder``): its JSON output."""
    archive = subprocess.run(
        ["git", "archive", commit, "helpers", "data", "params"], cwd=paths.ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=folder, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(folder)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@needs_history
def test_the_earlier_finding1_rule_is_the_code_that_ran_before_the_change(tmp_path: Path) -> None:
    # the code of finding 1 as the change found it (its parent), run from the history on synthetic runs, gives the
    # verdicts and p-values of the rule kept runnable here
    two = {"A": ("encoder", 22), "B": ("decoder", 135)}
    runs = {effect: synthetic(two, per_category=30, math_effect=effect, seed=seed) for seed, effect in
            enumerate((0.0, 2.5, -3.0))}  # fmt: skip
    pd.concat([table.assign(run=effect) for effect, table in runs.items()]).to_pickle(tmp_path / "runs.pkl")
    script = (
        "import json, sys\nimport pandas as pd\nfrom helpers import findings, robustness\nout = {}\n"
        f"for run, table in pd.read_pickle({str(tmp_path / 'runs.pkl')!r}).groupby('run'):\n"
        "    data = robustness.StudyData.from_metrics(table.drop(columns='run'), 1000, 0)\n"
        "    rule = findings.MathHasHighestEntropy()\n"
        "    fits = {m: r for m, r in rule.comparisons(data).items() if not isinstance(r, str)}\n"
        "    per = rule._verdicts(rule._tests(fits))\n"
        "    out[str(run)] = [per['verdict'].tolist(), per['p_math_highest_holm'].tolist(),\n"
        "                     per['p_some_category_above_holm'].tolist()]\n"
        "print(json.dumps(out))\n"
    )
    old = run_code_of(f"{DEVIATIONS[0].commit}^", script, tmp_path / "old")
    earlier = finding1.MathHasHighestEntropy(finding1.RULE_BEFORE_C0E16E4)
    verdicts = set()
    for effect, table in runs.items():
        per_model = earlier.per_model(StudyData.from_metrics(table, 1000, 0))[1]
        verdict, p_holds, p_refutes = old[str(effect)]
        assert per_model["verdict"].tolist() == verdict
        assert np.allclose(per_model["p_math_highest"], p_holds, rtol=1e-6, atol=1e-12)
        assert np.allclose(per_model["p_some_category_above_holm"], p_refutes, rtol=1e-6, atol=1e-12)
        verdicts |= set(verdict)
    assert len(verdicts) == 3  # the runs reach every verdict


@pytest.mark.slow
@needs_history
def test_an_entry_without_an_earlier_rule_changed_no_decision(tmp_path: Path) -> None:
    # the code before such a change (its parent) gives every verdict of the current code on runs that reach each
    # verdict of the findings it concerns
    names = {f"E{k}": ("encoder", 20 + 37 * k) for k in range(3)} | {
        f"D{k}": ("decoder", 90 + 51 * k) for k in range(4)
    }
    runs = {
        "null": synthetic(names, per_category=15, seed=1),
        "math above": synthetic(names, per_category=15, math_effect=3.0, seed=2),
        "math below, decoders 4.4x": synthetic(
            names, per_category=15, math_effect=-3.0, seed=3,
            sparsity={n: 0.05 if n.startswith("E") else 0.22 for n in names},
            activation={n: 0.4 * k for k, n in enumerate(names)},
        ),
    }  # fmt: skip
    pd.concat([table.assign(run=name) for name, table in runs.items()]).to_pickle(tmp_path / "runs.pkl")
    script = (
        "import json\nimport pandas as pd\nfrom helpers.stats import findings\nfrom helpers.stats.robustness "
        "import StudyData\nout = {}\n"
        f"for run, table in pd.read_pickle({str(tmp_path / 'runs.pkl')!r}).groupby('run'):\n"
        "    data = StudyData.from_metrics(table.drop(columns='run'), 1000, 0)\n"
        "    out[run] = {a.finding.number: a.verdict for a in findings.assess_all(data)}\n"
        "print(json.dumps(out))\n"
    )
    for deviation in (d for d in DEVIATIONS if d.earlier is None and max(d.findings) <= 4):
        old = run_code_of(f"{deviation.commit}^", script, tmp_path / deviation.commit)
        reached = set()
        for name, table in runs.items():
            data = StudyData.from_metrics(table, 1000, 0)
            for number in deviation.findings:
                now = findings.FINDINGS[number - 1].verdict_on(data)
                assert old[name][str(number)] == now, (deviation.commit, name, number)
                reached.add(now)
        assert {DOES_NOT_HOLD, INCONCLUSIVE, HOLDS} <= reached


@pytest.mark.slow
def test_the_earlier_finding1_rule_needed_a_margin_the_registered_one_does_not() -> None:
    # every category 0.3 noise SD above math in every model, many prompts: evidence against the claim, which the
    # registered rule calls so and the earlier one (a 0.5 residual SD margin) does not
    two = {"A": ("encoder", 22), "B": ("decoder", 135)}
    run = StudyData.from_metrics(synthetic(two, per_category=150, math_effect=-0.3, seed=3), 1000, 0)
    assert finding1.MathHasHighestEntropy().verdict_on(run) == DOES_NOT_HOLD
    assert deviations.finding1_before_c0e16e4(run) == INCONCLUSIVE


def test_the_earlier_finding2_rule_is_a_t_interval_on_hoyer_and_the_arithmetic_band() -> None:
    from scipy import stats

    names = {f"E{k}": ("encoder", 100) for k in range(2)} | {f"D{k}": ("decoder", 200) for k in range(2)}
    sparsity = {"E0": 0.05, "E1": 0.06, "D0": 0.4, "D1": 0.42}
    table = synthetic(names, per_category=2, sparsity=sparsity)
    run = StudyData.from_metrics(table, 1000, 0)
    assert findings.FINDINGS[1].verdict_on(run) == NOT_TESTABLE  # the registered rule needs 3 of each
    ratio, low, high = finding2.t_interval_ratio(run, "max_hoyer_sparsity")
    logs = np.log(table.groupby("display_name")["max_hoyer_sparsity"].mean())
    decoders, encoders = logs[["D0", "D1"]], logs[["E0", "E1"]]
    ci = stats.ttest_ind(decoders, encoders).confidence_interval(0.95)
    assert (low, high) == pytest.approx((np.exp(ci.low), np.exp(ci.high)))
    assert ratio == pytest.approx(np.exp(decoders.mean() - encoders.mean()))
    assert finding2.EARLIER_ABOUT_BAND == pytest.approx((3.54, 14.16))
    assert finding2.verdict_before_c0e16e4(run) in VERDICTS and finding2.verdict_before_c0e16e4(run) != NOT_TESTABLE


@pytest.mark.slow
def test_the_table_computes_every_verdict_on_a_nine_model_run() -> None:
    names = {
        "MiniLM-L6": ("encoder", 23), "L3": ("encoder", 17), "MPNet": ("encoder", 110), "EGemma": ("encoder", 303),
        "E5": ("encoder", 118), "SmolLM2-135M": ("decoder", 135), "Gemma3-270M": ("decoder", 268),
        "Q05": ("decoder", 494), "Q15": ("decoder", 1500),
    }  # fmt: skip
    table = synthetic(names, per_category=15, math_effect=-1.0)
    registry = {"MiniLM-L6": "minilm-l6", "SmolLM2-135M": "smollm2-135m", "Gemma3-270M": "gemma3-270m"}
    table["model"] = table["display_name"].map(registry).fillna(table["model"])
    run = StudyData.from_metrics(table, 1000, 0)
    result = deviations.deviations_table(run, findings.FINDINGS)
    assert list(result.columns) == list(deviations.DEVIATION_COLUMNS)
    assert set(deviations.SUMMARY_COLUMNS) < set(deviations.DEVIATION_COLUMNS)  # the report's glance: real columns
    assert list(result["entry"]) == list(range(1, len(DEVIATIONS) + 1))
    for row, deviation in zip(result.itertuples(), DEVIATIONS, strict=True):
        now = deviation.verdict_now(run, findings.FINDINGS)
        parts = [part.split(": ")[-1] for part in now.split("; ")]
        assert row.verdict_under_current_rule == now and set(parts) <= set(VERDICTS)
        assert len(parts) == len(deviation.findings)
        expected = deviation.earlier(run) if deviation.earlier else now
        assert row.verdict_under_earlier_rule == expected and row.same_verdict == (expected == now)
        assert row.earlier_rule_run == (deviation.earlier is not None)
        unseen = [name for name, model in zip(run.models.index, run.models["model"], strict=True)
                  if model not in deviation.seen_models]  # fmt: skip
        assert f"the {len(unseen)} models not seen before the change ({', '.join(unseen)})" in (
            row.current_rule_on_models_not_seen
        )
    unseen = run.restricted_to(["L3", "MPNet", "EGemma", "E5", "Q05", "Q15"])
    mitigation = result.loc[0, "current_rule_on_models_not_seen"]
    assert mitigation.startswith(findings.FINDINGS[0].verdict_on(unseen))
    assert f"'{DOES_NOT_HOLD}' in " in mitigation
    assert MATH in set(unseen.table["category"]) and set(unseen.models.index) == {
        "L3",
        "MPNet",
        "EGemma",
        "E5",
        "Q05",
        "Q15",
    }


def test_the_log_is_in_the_registered_text_with_each_entrys_earlier_rule() -> None:
    text = findings.rules_markdown()
    assert "## Deviations" in text and "paper/tables/deviations.*" in text
    for number, deviation in enumerate(DEVIATIONS, start=1):
        assert f"**{number}. {deviation.date}, commit {deviation.commit}," in text
        assert f"(commit {deviation.seen_commit})" in text
        if deviation.earlier is not None:
            module, _, name = deviation.earlier_name.rpartition(".")
            assert f"`{deviation.earlier_name}`" in text and hasattr(__import__(module, fromlist=[name]), name)


@needs_history
def test_what_had_been_seen_before_finding5_was_restated_is_what_the_eight_model_run_holds() -> None:
    entry = next(d for d in DEVIATIONS if d.findings == (5,) and d.earlier is not None and d.seen_commit == "9db19a0")
    tests = pd.read_csv(io.StringIO(git("show", f"{entry.seen_commit}:paper/tables/signature_tests.csv")))
    for kind, label in (("representational", "representational probe"), ("scalar", "scalar view")):
        accuracy = tests.loc[tests["kind"] == kind, "accuracy"]
        assert f"{label} {accuracy.min():.2f}-{accuracy.max():.2f}" in entry.seen
    surface = tests["surface_accuracy"]
    assert f"against {surface.min():.2f}-{surface.max():.2f} for surface features" in entry.seen
    verdicts = pd.read_csv(io.StringIO(git("show", f"{entry.seen_commit}:paper/tables/signature_verdicts.csv")))
    assert (verdicts["verdict"] == HOLDS).all() and "holds in every model" in entry.seen
    registered = git("show", f"{entry.commit}^:paper/preregistered_rules.md")
    assert "multinomial logistic regression" in registered and "PCA-reduced" in registered  # not what ran


@pytest.mark.slow
@needs_history
def test_the_earlier_finding5_rule_is_the_code_that_ran_before_the_change(tmp_path: Path) -> None:
    # the code of the change's parent, run from the history on synthetic models, against finding5_earlier
    from helpers.stats.findings import finding5, finding5_earlier
    from tests.support import TRUTHS, study_prompts

    entry = next(d for d in DEVIATIONS if d.earlier is finding5_earlier.verdict_on and d.seen_commit == "9db19a0")
    prompts = study_prompts(15)
    cases = {
        "bag of words": TRUTHS["text only: bag of words"],
        "noise": TRUTHS["noise: later layers carry nothing"],
    }
    arrays = {}
    for name, truth in cases.items():
        from helpers.stats.findings import finding5_calibration

        arrays[name] = finding5_calibration.simulated_vectors(truth, prompts, seed=3)
    profiles = np.random.default_rng(3).standard_normal((len(prompts), 4))
    np.savez(tmp_path / "inputs.npz", profiles=profiles, **arrays)
    prompts.to_pickle(tmp_path / "prompts.pkl")
    script = (
        "import json\nimport numpy as np\nimport pandas as pd\n"
        "from helpers.stats.findings import finding5, signatures\n"
        f"prompts = pd.read_pickle({str(tmp_path / 'prompts.pkl')!r})\n"
        f"inputs = np.load({str(tmp_path / 'inputs.npz')!r})\nout = {{}}\n"
        f"for name in {list(cases)!r}:\n"
        "    settings = signatures.Settings(repeats=1)\n"
        "    tests = signatures.analyse_model(prompts, inputs['profiles'], inputs[name], settings, units=False).tests\n"
        "    tests = tests.assign(model=name)\n"
        "    out[name] = {'p': tests['p_permutation'].tolist(), 'selectivity': tests['selectivity'].tolist(), "
        "'verdict': finding5.model_verdicts(tests)['verdict'].tolist()}\n"
        "print(json.dumps(out))\n"
    )
    old = run_code_of(f"{entry.commit}^", script, tmp_path / "code")
    for name in cases:
        now = finding5_earlier.model_tests(prompts, profiles, arrays[name], finding5.Settings(repeats=1))
        assert np.allclose(now["p_permutation"], old[name]["p"]) and np.allclose(
            now["selectivity"], old[name]["selectivity"]
        )
        assert finding5_earlier.model_verdicts(now.assign(model=name))["verdict"].tolist() == old[name]["verdict"]
