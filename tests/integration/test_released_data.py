"""The released data (helpers.study.release): every model x prompt and per-layer summaries as parquet and CSV beside a
data card, written by the workflow (the smoke run), kept by a rerun that reproduces them, and committed for the
default study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.base import paths
from helpers.study import release, reproduction
from helpers.study.outputs import RELEASED_DATA


def check_release(folder: Path, prompts: int | None = None) -> None:
    card = (folder / "DATA_CARD.md").read_text(encoding="utf-8")
    for name in RELEASED_DATA:
        parquet, csv = pd.read_parquet(folder / f"{name}.parquet"), pd.read_csv(folder / f"{name}.csv")
        assert list(parquet.columns) == list(csv.columns) and len(parquet) == len(csv) > 0
        for column in parquet.columns:  # every column described in the card, with its unit
            assert f"| `{column}` |" in card, column
        numbers = parquet.select_dtypes("number").columns
        assert np.allclose(parquet[numbers].to_numpy(float), csv[numbers].to_numpy(float), rtol=1e-3, equal_nan=True)
    assert "undocumented" not in card and "## Licence" in card and "MIT" in card
    measurements = pd.read_parquet(folder / "measurements.parquet")
    for column in ("final_activation", "attention_entropy", "max_sparsity", "n_tokens", "n_words", "n_digits", "text"):
        assert column in measurements
    if prompts is not None:
        assert len(measurements) == prompts * measurements["model"].nunique()
    assert not measurements.duplicated(["model", "prompt_id"]).any()
    for model in measurements["model"].unique():  # the models' hashes: each model's revision in the card
        assert f"| `{model}` |" in card


def test_the_smoke_run_releases_every_model_and_prompt_with_a_data_card(smoke_run: Path) -> None:
    check_release(smoke_run / "paper" / "data" / "smoke", prompts=24)


def test_a_rerun_keeps_the_released_files_it_reproduces(smoke_run: Path, tmp_path: Path) -> None:
    from helpers.study import load_params
    from helpers.study.outputs import RunOutputs

    folder = smoke_run / "paper" / "data" / "smoke"
    tables = {name: pd.read_parquet(folder / f"{name}.parquet") for name in RELEASED_DATA}
    outputs = RunOutputs(load_params(smoke_run / "params" / "smoke.yaml"))
    target = type("Outputs", (), {})()  # the same layout, in a temporary folder
    target.params, target.data, target.data_card = outputs.params, tmp_path, tmp_path / "DATA_CARD.md"
    target.released = lambda name, suffix="parquet": tmp_path / f"{name}.{suffix}"
    provenance = {"models": {}, "params": {}}
    release.write_release(tables, target, provenance, "notebooks/05_export_tables.ipynb")
    check = reproduction.Check(tmp_path / "record.json")
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    release.write_release(tables, target, provenance, "notebooks/05_export_tables.ipynb", check)
    assert all(c.reproduced and c.action == "kept" for c in check.comparisons), check.comparisons
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.name in before} == before
    changed = {
        **tables,
        "measurements": tables["measurements"].assign(attention_entropy=lambda t: t.attention_entropy * 2),
    }
    check = reproduction.Check(tmp_path / "record.json")
    release.write_release(changed, target, provenance, "notebooks/05_export_tables.ipynb", check)
    assert check.table_comparison("data/measurements").action == "written"
    assert np.allclose(pd.read_csv(tmp_path / "measurements.csv")["attention_entropy"],
                       changed["measurements"]["attention_entropy"], rtol=1e-3)  # fmt: skip


def test_the_default_study_releases_its_data(monkeypatch: pytest.MonkeyPatch) -> None:
    folder = paths.PAPER / "data"
    if not (folder / "measurements.csv").is_file():
        pytest.skip("paper/data/ has not been written by the default study yet: `make reproduce` writes it")
    from helpers.core import registry
    from helpers.study import load_params, load_prompts

    # the parameters only (no model is loaded): `make test` installs the test models, not the study's decoders
    monkeypatch.setattr(registry, "is_installed", lambda name: True)

    params = load_params(paths.PARAMS / "default.yaml")
    check_release(
        folder, prompts=len(load_prompts(params.prompts_path, params.categories, params.prompts_per_category))
    )
