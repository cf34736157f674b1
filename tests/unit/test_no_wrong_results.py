"""Issue 22, the second adversarial pass: each numbered case as a regression test (the workflow-level
cases, 1, 2, 14 and 15, are in tests/integration/test_stale_results.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import study
from helpers.base import paths, store
from helpers.core import models
from helpers.report import explore_measure
from helpers.study import CATEGORIES, ParameterError, PromptFileError, collection, tables
from helpers.study.outputs import FINDINGS_FIGURES, SIGNATURE_FIGURES, STUDY_FIGURES


def _folder(tmp_path: Path, name: str = "model", tokenizer: bool = True, nan: bool = False) -> Path:
    """tiny-bert saved to ``tmp_path/name`` as save_pretrained writes it (optionally without tokenizer, or NaN)."""
    loaded = models.load_model("tiny-bert")
    folder = tmp_path / name
    model = models.converted(loaded, dtype=torch.float32, device=torch.device("cpu")).model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if nan:
        state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    model.save_pretrained(folder, state_dict=state)
    if tokenizer:
        loaded.tokenizer.save_pretrained(folder)
    return folder


def _params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **raw: object) -> study.StudyParams:
    """A small run whose results go to ``tmp_path`` (two categories, two prompts each unless given)."""
    monkeypatch.setattr(paths, "RESULTS", tmp_path / "results")
    defaults = {"name": "t", "categories": ["mathematical_reasoning", "creative_writing"], "prompts_per_category": 2}
    return study.parse_params(defaults | raw)


# --- 3: two model folders with one name ------------------------------------------------------------------------


def test_3_two_model_folders_with_one_display_name_are_refused_naming_both(tmp_path: Path) -> None:
    for version in ("v1", "v2"):
        (tmp_path / version / "model").mkdir(parents=True)
        (tmp_path / version / "model" / "config.json").write_text("{}")
    first, second = str(tmp_path / "v1" / "model"), str(tmp_path / "v2" / "model")
    with pytest.raises(ParameterError, match=rf"{re.escape(first)}' and '{re.escape(second)}' would both be shown"):
        study.parse_params({"models": [first, second]})


# --- 4: a folder without tokenizer files -------------------------------------------------------------------------


def test_4_a_model_folder_without_its_tokenizer_is_refused(tmp_path: Path) -> None:
    bare = _folder(tmp_path, "bare", tokenizer=False)
    with pytest.raises(models.ModelUnavailableError, match=r"tokenizer has only \d+ tokens .* embeds 30522"):
        models.load_model(str(bare))
    whole = models.load_model(str(_folder(tmp_path, "whole")))
    assert len(whole.tokenizer) == 30522


# --- 5: a model that is NaN on every prompt ------------------------------------------------------------------------


def test_5_a_model_with_nan_on_every_prompt_fails_its_collection(tmp_path: Path, monkeypatch) -> None:
    params = _params(tmp_path, monkeypatch, models=[str(_folder(tmp_path, nan=True))], prompts_per_category=1)
    with pytest.raises(collection.ModelFailedError, match=r"inf or NaN activations on every one of its 2 prompts"):
        collection.collect_model(params, params.models[0], progress=False)
    assert not params.activations_path(params.models[0]).exists()


# --- 6 and 7: max_length in measure, explore and notebook 07 ------------------------------------------------------


@pytest.mark.parametrize("max_length", [1, 2])
def test_6_measure_and_explore_refuse_a_max_length_without_room_for_text(max_length: int) -> None:
    from helpers import measure

    with pytest.raises(ParameterError, match=rf"max_length={max_length} leaves no room.*at least 3"):
        measure("tiny-bert", ["What is 2+2?"], max_length=max_length)
    with pytest.raises(ParameterError, match="leaves no room"):
        explore_measure.analyse("tiny-bert", "What is 2+2?", max_tokens=max_length)


def test_7_the_explorer_cuts_a_prompt_as_the_run_cut_its_prompts(monkeypatch, tmp_path: Path) -> None:
    params = _params(tmp_path, monkeypatch, models=["tiny-bert"], max_length=8)
    assert explore_measure.study_max_tokens(params, 512) == 8
    assert explore_measure.study_max_tokens(params.model_copy(update={"max_length": None}), 512) == 512
    cells = json.loads((paths.NOTEBOOKS / "07_explore.ipynb").read_text())["cells"]
    code = "".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    assert "max_tokens = explore.study_max_tokens(params, max_tokens)" in code


# --- 8: ranks with custom categories -------------------------------------------------------------------------------


def test_8_custom_categories_rank_among_the_runs_categories() -> None:
    published, _ = tables.published_tables()
    cells = pd.DataFrame(
        {
            "Category": ["alpha", "beta", "mathematical_reasoning"],
            **{metric: [19.06, 10.0, 13.62] for metric in tables.METRIC_COLUMNS},
        }
    )
    compared = tables.compare_categories(cells, published)
    entropy = compared[compared["metric"] == tables.METRIC_COLUMNS[0]].set_index("Category")
    assert entropy.loc["alpha", "reproduced_rank"] == 1
    assert entropy.loc["mathematical_reasoning", "reproduced_rank"] == 2
    assert entropy.loc["beta", "reproduced_rank"] == 3


# --- 9: a one-model study --------------------------------------------------------------------------------------------


def test_9_a_one_model_study_shows_every_table_saying_what_is_missing() -> None:
    from helpers.stats import findings
    from tests.support import synthetic

    metrics = synthetic({"Smol": ("decoder", 135)}, per_category=4)
    published, _ = tables.published_tables()
    analysis = findings.analyse(metrics, published, 1000, 0, calibration_runs=2)
    assert not any(table.empty for table in analysis.tables.values())
    shown: list[object] = []
    namespace = {
        "analysis": analysis,
        "findings": findings,
        "Markdown": str,
        "display": lambda *items: None,
        "notebooks": type(
            "N",
            (),
            {
                "show_table": staticmethod(lambda table, **_: shown.append(table)),
                "show_text": staticmethod(lambda text: None),
            },
        ),
        "cards": type("C", (), {"show_cards": staticmethod(lambda folder: None)}),
        "outputs": type("O", (), {"tables": paths.TABLES}),
    }
    cells = json.loads((paths.NOTEBOOKS / "06_robustness.ipynb").read_text())["cells"]
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and "analysis.tables[" in source and "findings.analyse" not in source:
            exec(compile(source, "06_robustness.ipynb", "exec"), namespace)  # noqa: S102 - the notebook's own cells
    assert len(shown) >= 5


# --- 10 and 11: prompt files --------------------------------------------------------------------------------------


def test_10_a_subset_of_categories_selects_from_the_shipped_prompt_file(tmp_path: Path) -> None:
    chosen = ["mathematical_reasoning", "creative_writing"]
    prompts = study.load_prompts(paths.PROMPTS / "cognitive_tasks.csv", chosen, 2)
    assert sorted(set(prompts["category"])) == sorted(chosen) and len(prompts) == 4
    with pytest.raises(PromptFileError, match="unknown categor"):  # a category of no kind is still an error
        study.load_prompts(_csv(tmp_path, "a,poetry,hi\n"), chosen)


def _csv(folder: Path, rows: str, header: str = "prompt_id,category,text", bom: bool = False) -> Path:
    path = folder / f"prompts-{abs(hash((rows, header, bom)))}.csv"
    path.write_text(("\ufeff" if bom else "") + header + "\n" + rows, encoding="utf-8")
    return path


def test_11_a_duplicate_column_names_the_file_and_the_column(tmp_path: Path) -> None:
    path = _csv(tmp_path, "a,language_tasks,hi,ho\n", header="prompt_id,category,text,text")
    with pytest.raises(PromptFileError, match=rf"{re.escape(str(path))}, line 1: column\(s\) \['text'\] appear more"):
        study.load_prompts(path)


# --- 12: only params/default.yaml runs the main study ---------------------------------------------------------------


def test_12_only_the_main_parameter_file_may_run_the_main_study(tmp_path: Path) -> None:
    other = tmp_path / "exp" / "default.yaml"
    other.parent.mkdir()
    other.write_text("models: [tiny-bert]\n")
    with pytest.raises(ParameterError, match=r"run name 'default' .* is reserved for the main study"):
        study.load_params(other)
    named = tmp_path / "mine.yaml"
    named.write_text("models: [tiny-bert]\nname: default\n")
    with pytest.raises(ParameterError, match="reserved for the main study"):
        study.load_params(named)


# --- 13: chunks kept by configuration; batch size out of the key -------------------------------------------------


def test_13_returning_to_a_configuration_reuses_its_chunks(tmp_path: Path, monkeypatch) -> None:
    params = _params(tmp_path, monkeypatch, models=["tiny-bert"])

    def measured(**changes: object) -> int:
        run = params.model_copy(update=changes)
        collection.collect_model(run, "tiny-bert", progress=False)
        return store.read_metadata(run.activations_path("tiny-bert"))["chunks_measured_now"]

    assert measured() == 2
    assert measured(batch_size=4) == 0  # cannot change a number: not in the key
    assert measured(max_length=8) == 2
    assert measured() == 0  # back to the first configuration: its chunks were kept
    provenance = store.read_metadata(params.activations_path("tiny-bert"))
    assert provenance["model"]["attention_path"] == "fused"  # 16: the path that ran, not just the loader's setting


def test_13_the_chunk_cache_is_bounded_least_recently_used_first(tmp_path: Path) -> None:
    for age, key in enumerate(["old", "mid", "new", "current"]):
        for suffix in ("", "_layers"):
            path = tmp_path / f"{key}{suffix}.parquet"
            path.write_bytes(b"x" * 100)
            os.utime(path, (1000 + age, 1000 + age))
    removed = collection.prune_chunks(tmp_path, keep=["current"], limit=450)
    assert sorted(p.name for p in removed) == ["old.parquet", "old_layers.parquet"]
    assert collection.CHUNK_CACHE_BYTES == 256 * 2**20
    collection.prune_chunks(tmp_path, keep=["current"], limit=0)
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == ["current.parquet", "current_layers.parquet"]
    assert list(json.loads((tmp_path / collection.LAST_USED).read_text())) == ["current"]


# --- 14: one spelling of the parameter file -------------------------------------------------------------------------


def test_14_a_parameter_file_has_one_spelling() -> None:
    spellings = ["params/smoke.yaml", "./params/smoke.yaml", str(paths.PARAMS / "smoke.yaml")]
    assert {study.canonical_params(s) for s in spellings} == {"params/smoke.yaml"}


# --- 15: a failed run's front page ------------------------------------------------------------------------------------


# --- 16: the small points ---------------------------------------------------------------------------------------------


def test_16_every_key_figure_of_the_front_page_is_made_by_a_notebook() -> None:
    from helpers.report import front_page

    assert set(front_page.KEY_FIGURES) <= set(STUDY_FIGURES) | set(FINDINGS_FIGURES) | set(SIGNATURE_FIGURES)


def test_16_a_yaml_key_given_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text("models: [tiny-bert]\nbatch_size: 8\nbatch_size: 4\n")
    with pytest.raises(ParameterError, match=r"key 'batch_size' is given twice"):
        study.load_params(path)


def test_16_a_text_of_invisible_characters_is_refused_naming_the_prompt(tmp_path: Path) -> None:
    path = _csv(tmp_path, "a,language_tasks,hi\nb,language_tasks,\u200b\u200c\u2060\n")
    with pytest.raises(PromptFileError, match=r"only whitespace or invisible characters, on line 3 \('b'\)"):
        study.load_prompts(path)
    from helpers import measure

    with pytest.raises(ValueError, match=r"texts\[1\] is empty, or only whitespace or invisible"):
        measure("tiny-bert", ["hi", "\u200b\ufeff"])


def test_16_a_misspelt_explorer_category_names_the_allowed_ones(tmp_path: Path, monkeypatch) -> None:
    params = _params(tmp_path, monkeypatch, models=["tiny-bert"])
    analysis = explore_measure.analyse("tiny-bert", "What is 2+2?")
    with pytest.raises(ValueError, match=r"'mathematical_reasonin' is not one of .*\['mathematical_reasoning'"):
        explore_measure.study_context(analysis, explore_measure.load_study(params), "mathematical_reasonin")
    assert (
        explore_measure.study_category(params.model_copy(update={"categories": ["creative_writing"]}))
        == "creative_writing"
    )


def test_16_the_dequantized_model_cache_honours_the_umask(tmp_path: Path, monkeypatch) -> None:
    tiny = models.load_model("tiny-bert")
    monkeypatch.setattr(paths, "CACHE", tmp_path)
    monkeypatch.setattr(models, "_package_file", lambda *args: tmp_path / "model.gguf")
    monkeypatch.setattr(models.AutoModel, "from_pretrained", lambda *args, **kwargs: tiny.model)
    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", lambda *args, **kwargs: tiny.tokenizer)
    previous = os.umask(0o022)
    try:
        folder = models.dequantized_cache(models.EMBEDDED["smollm2-135m"], "test")
    finally:
        os.umask(previous)
    assert folder.stat().st_mode & 0o777 == 0o755


def test_16_a_prompt_file_with_a_byte_order_mark_reads(tmp_path: Path) -> None:
    prompts = study.load_prompts(_csv(tmp_path, "a,language_tasks,hi\n", bom=True), ["language_tasks"])
    assert prompts["prompt_id"].tolist() == ["a"]


def test_16_a_cuda_device_the_machine_lacks_fails_the_check(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ParameterError, match=r"device 'cuda:0': this machine has 0 CUDA device"):
        study.parse_params({"models": ["tiny-bert"], "device": "cuda:0"})


def test_16_outputs_of_other_runs_are_ignored_by_git() -> None:
    paths_ = ["figures/smoke/a.png", "paper/tables/smoke/a.csv", "figures/a.png", "figures/screenshots/index.png"]
    result = subprocess.run(["git", "check-ignore", *paths_], cwd=paths.ROOT, capture_output=True, text=True)
    assert result.stdout.split() == ["figures/smoke/a.png", "paper/tables/smoke/a.csv"]


def test_prompt_subsets_keep_the_papers_order() -> None:
    prompts = study.load_prompts(paths.PROMPTS / "cognitive_tasks.csv", list(CATEGORIES[:3]), 1)
    assert list(dict.fromkeys(prompts["category"])) == list(CATEGORIES[:3])
