"""The one-prompt explorer (helpers/report/explore.py) on tiny models: the same numbers as the study, the
maps of the right prompt, shared models left as they were, and clear words where data is missing."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers import load_model  # noqa: E402
from helpers.report import explore, explore_figures, explore_measure  # noqa: E402
from helpers.study import CATEGORIES, parse_params  # noqa: E402

MODEL = "tiny-gpt2"
ODD_PROMPTS = ["Why?", "Ça coûte 5 € — 日本語 🙂 naïve", " ".join(["long"] * 700)]


def run_params(name: str = "no-such-run-for-tests") -> object:
    return parse_params({"models": [MODEL, "tiny-bert"], "name": name, "prompts_per_category": 2})


def test_old_head_strings_become_an_integer_head_column_in_numeric_order() -> None:
    old = pd.DataFrame(
        {
            "layer": [1, 1, 1, 1],
            "statistic": ["attention_entropy_head_10", "attention_entropy_head_2", "attention_entropy", "mean"],
            "value": [10.0, 2.0, 5.0, 0.1],
        }
    )
    new = explore_measure.with_head_column(old)
    assert new["statistic"].tolist() == [
        "attention_entropy_head",
        "attention_entropy_head",
        "attention_entropy",
        "mean",
    ]
    assert new["head"].tolist()[:2] == [10, 2] and new["head"].isna().tolist() == [False, False, True, True]
    assert explore_measure.head_grid(new).columns.tolist() == [2, 10]
    assert explore_measure.with_head_column(new) is new  # the new schema passes through


def test_analysis_agrees_with_the_study_measurement_and_its_own_maps() -> None:
    analysis = explore_measure.analyse(MODEL, "If all bloops are razzies, are some razzies bloops?")
    loaded = load_model(MODEL)
    assert analysis.attention.shape == (loaded.n_layers, loaded.n_heads, analysis.n_tokens, analysis.n_tokens)
    assert np.allclose(analysis.attention.sum(axis=-1), 1.0, atol=1e-5)  # every row a distribution
    assert np.allclose(np.triu(analysis.attention, k=1), 0.0)  # a decoder attends only backwards
    from_maps = explore_measure.row_entropy(analysis.attention).sum(axis=-1)  # (L, H): the study's per-head statistic
    assert np.allclose(from_maps, analysis.head_entropy().to_numpy(), rtol=1e-4)
    assert analysis.tokens["token"].iloc[0] == "[CLS]" and analysis.tokens["special"].iloc[0]
    assert analysis.measures["attention_entropy"] == pytest.approx(from_maps.mean(), rel=1e-4)


def test_attention_maps_leave_a_shared_model_as_it_was_even_on_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_model(MODEL)
    loaded.model.set_attn_implementation("sdpa")
    try:
        maps = explore_measure.attention_maps(loaded, "A short prompt.")
        assert maps.shape[0] == loaded.n_layers
        assert loaded.model.config._attn_implementation == "sdpa"

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("forward failed")

        monkeypatch.setattr(loaded.model.base_model, "forward", broken)
        with pytest.raises(RuntimeError, match="forward failed"):
            explore_measure.attention_maps(loaded, "A short prompt.")
        assert loaded.model.config._attn_implementation == "sdpa" and not loaded.model.training
    finally:
        loaded.model.set_attn_implementation("eager")


@pytest.mark.parametrize("prompt", ODD_PROMPTS, ids=["one-word", "non-ascii", "very-long"])
def test_every_view_draws_an_odd_prompt_without_warnings(prompt: str) -> None:
    analysis = explore_measure.analyse(MODEL, prompt, max_tokens=64)
    assert analysis.n_tokens <= 64 and analysis.truncated == (analysis.n_tokens == 64 and len(prompt) > 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph or a layout warning would show in Lab and reports
        for figure in (
            explore_figures.profile_figure(analysis),
            explore_figures.head_heatmap(analysis),
            explore_figures.attention_pattern(analysis, analysis.n_layers, analysis.n_heads - 1),
            explore_figures.head_view(analysis, 1, query=analysis.n_tokens - 1),
            explore_figures.model_view(analysis, max_size=16),
        ):
            assert figure._repr_png_().startswith(b"\x89PNG")


def test_layer_and_head_out_of_range_say_what_exists() -> None:
    analysis = explore_measure.analyse(MODEL, "Hello there.")
    with pytest.raises(ValueError, match=r"layers 1\.\.2"):
        explore_figures.attention_pattern(analysis, 0, 0)
    with pytest.raises(ValueError, match=r"heads 0\.\.\d"):
        explore_figures.attention_pattern(analysis, 1, 99)


def test_percentiles_place_the_prompt_in_its_band_and_category() -> None:
    assert explore_measure.percentile([1, 2, 3, 4], 3) == pytest.approx(62.5)  # 2 below, 1 tie
    assert (
        explore_measure.ordinal(1) == "1st"
        and explore_measure.ordinal(12) == "12th"
        and explore_measure.ordinal(68.4) == "68th"
    )
    analysis = explore_measure.analyse(MODEL, "What is two plus two equal to?")  # 7 words: short
    h = float(analysis.measures["attention_entropy"])
    peers = []
    for i, category in enumerate(CATEGORIES[:2]):
        for band, words in (("short", 6), ("long", 50)):
            for offset in (-2.0, -1.0, 1.0, 3.0):
                peers.append(
                    {
                        "model": MODEL,
                        "prompt_id": f"{category}_{band}_{offset}",
                        "category": category,
                        "text": " ".join(["w"] * words),
                        "n_tokens": words + 2,
                        "attention_entropy": h + offset + (100 if band == "long" else 0),
                        "attention_entropy_normalized": 0.5 + i,
                        "max_sparsity": 0.1,
                        "final_activation": 0.0,
                    }
                )
    metrics = pd.DataFrame(peers)
    metrics = metrics.assign(words=metrics["text"].map(explore_measure.word_count))
    metrics = metrics.assign(length_band=metrics["words"].map(explore_measure.length_band))
    context = explore_measure.study_context(analysis, explore_measure.Study(run_params(), metrics), CATEGORIES[0])
    raw = context.table.set_index("compared with")["raw H_att percentile"]
    assert raw.tolist() == [25.0, 50.0, 25.0, 50.0]  # all, short band, category, short and category
    assert context.table["prompts"].tolist() == [16, 8, 8, 4]
    assert "25th percentile of raw attention entropy" in context.sentence and "among the 8 short" in context.sentence


def test_missing_study_results_are_said_plainly() -> None:
    study = explore_measure.load_study(run_params())
    assert study.metrics is None and "results/no-such-run-for-tests/metrics.parquet" in study.missing
    assert "make reproduce" in study.missing
    context = explore_measure.study_context(explore_measure.analyse(MODEL, "Hello there."), study, CATEGORIES[0])
    assert context.table is None and context.sentence == study.missing and explore.context_table(context) is None
    other = pd.DataFrame({"model": ["tiny-bert"], "category": [CATEGORIES[0]], "length_band": ["short"]})
    context = explore_measure.study_context(
        explore_measure.analyse(MODEL, "Hello there."), explore_measure.Study(run_params(), other), CATEGORIES[0]
    )
    assert "tiny-gpt2 is not one of run" in context.sentence and "tiny-bert" in context.sentence


def test_explorer_widget_redraws_for_a_new_prompt_and_reports_bad_input() -> None:
    pytest.importorskip("ipywidgets")
    explorer = explore.Explorer(run_params(), "Hello there.", MODEL, layer=2, head=1)
    assert explorer.analysis is not None and (explorer.layer.value, explorer.head.value) == (2, 1)
    assert explorer.layer.max == explorer.analysis.n_layers and "make reproduce" in explorer.status.value
    first = explorer.analysis
    explorer.prompt.value = "A completely different and longer prompt about zebras."
    explorer.button.click()
    assert explorer.analysis is not first and "zebra" in explorer.analysis.tokens["token"].tolist()
    explorer.prompt.value = "   "
    explorer.button.click()
    assert "prompt is empty" in explorer.status.value and "color:#b00020" in explorer.status.value
    assert explorer.analysis.tokens["token"].tolist()[1] == "a"  # the last good prompt stays shown
    explorer.prompt.value = "Back to a real prompt."
    explorer.model.value = "tiny-bert"  # a new model redraws at once
    assert explorer.analysis.model == "tiny-bert" and explorer.layer.max == explorer.analysis.n_layers


def test_category_probes_give_a_distribution_per_layer_and_say_when_the_run_lacks_vectors() -> None:
    import shutil
    import uuid

    from helpers.base import paths
    from helpers.study import collection

    analysis = explore_measure.analyse(MODEL, "What is 17 times 3?")
    missing = explore.signature_view(analysis, run_params())
    assert len(missing) == 1 and "No stored vectors" in str(missing[0].data)
    params = run_params(f"test-probes-{uuid.uuid4().hex[:8]}")
    try:
        collection.collect_model(params, MODEL, progress=False)
        probabilities = explore_measure.category_probes(analysis, params)
        assert set(probabilities["layer"]) == set(range(-1, analysis.n_layers + 1))  # -1: surface only
        assert set(probabilities["category"]) == set(CATEGORIES)
        np.testing.assert_allclose(probabilities.groupby("layer")["probability"].sum(), 1.0, rtol=1e-6)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            figure = explore_figures.signature_figure(analysis, probabilities)
            assert figure._repr_png_().startswith(b"\x89PNG")
    finally:
        shutil.rmtree(paths.RESULTS / params.name, ignore_errors=True)


def _png_of(output: object) -> list[bytes]:
    """The PNG images an ipywidgets Output holds (what a figure displayed into it became)."""
    return [item["data"]["image/png"] for item in output.outputs if "image/png" in item.get("data", {})]


def test_the_model_menu_shows_display_names_and_a_new_model_resets_the_layer() -> None:
    pytest.importorskip("ipywidgets")
    params = parse_params({"models": ["tiny-llama", "tiny-bert"], "name": "no-such-run-for-tests"})
    explorer = explore.Explorer(params, "Hello there, model menu.", "tiny-llama", layer=2, head=1)
    labels = dict((value, label) for label, value in explorer.model.options)
    assert labels == {name: load_model(name).display_name for name in ("tiny-llama", "tiny-bert")}
    assert explore.display_name("minilm-l6") == "MiniLM-L6"  # registry id -> display name, nothing loaded
    assert explorer.layer.value == 2 and explorer.head.value == 1
    explorer.model.value = "tiny-bert"
    analysis = explorer.analysis
    assert analysis.model == "tiny-bert" and explorer.layer.max == analysis.n_layers
    assert explorer.layer.value == explore.default_layer(analysis, None)  # its own middle layer
    assert explorer.head.value == 0 and explorer.shown_heads == list(range(analysis.n_heads))


def test_choosing_a_query_token_outlines_its_row_in_the_attention_pattern() -> None:
    analysis = explore_measure.analyse(MODEL, "Which token looks where?")
    figure = explore_figures.attention_pattern(analysis, 1, 0, query=2)
    outlined = [p for p in figure.axes[0].patches if p.get_edgecolor()[:3] != (0.0, 0.0, 0.0)]
    assert len(outlined) == 1 and outlined[0].get_y() == pytest.approx(1.5) and outlined[0].get_height() == 1.0
    assert "query 2" in figure.axes[0].get_title()
    assert not explore_figures.attention_pattern(analysis, 1, 0).axes[0].patches  # no query, no outline
    with pytest.raises(ValueError, match="tokens 0"):
        explore_figures.attention_pattern(analysis, 1, 0, query=analysis.n_tokens)
    pytest.importorskip("ipywidgets")
    explorer = explore.Explorer(run_params(), "Which token looks where?", MODEL)
    before = _png_of(explorer.outputs["Attention pattern"])
    explorer.query.value = 2
    after = _png_of(explorer.outputs["Attention pattern"])
    assert before and after and before != after  # redrawn with the row outlined


def test_head_toggles_choose_the_heads_of_the_head_view() -> None:
    pytest.importorskip("ipywidgets")
    explorer = explore.Explorer(run_params(), "Heads on and off.", MODEL)
    n_heads = explorer.analysis.n_heads
    assert len(explorer.heads.children) == n_heads and explorer.shown_heads == list(range(n_heads))
    every = _png_of(explorer.outputs["Head view"])
    explorer.heads.children[0].value = False
    assert explorer.shown_heads == list(range(1, n_heads))
    assert _png_of(explorer.outputs["Head view"]) != every
    figure = explore_figures.head_view(explorer.analysis, 1, heads=[1])
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["head 1"]
    for toggle in explorer.heads.children:
        toggle.value = False
    assert "Every head is switched off" in str(explorer.outputs["Head view"].outputs)


def test_a_prompt_longer_than_every_study_prompt_is_warned_about() -> None:
    analysis = explore_measure.analyse(MODEL, " ".join(["long"] * 200), max_tokens=128)
    peers = pd.DataFrame(
        {
            "model": MODEL,
            "prompt_id": [f"p{i}" for i in range(6)],
            "category": CATEGORIES[0],
            "text": "a short study prompt",
            "n_tokens": [10, 20, 30, 40, 50, 77],
            "attention_entropy": np.linspace(1, 50, 6),
            "attention_entropy_normalized": 0.5,
            "max_sparsity": 0.1,
            "final_activation": 0.0,
        }
    )
    peers = peers.assign(words=4, length_band="short")
    context = explore_measure.study_context(analysis, explore_measure.Study(run_params(), peers), CATEGORIES[0])
    assert context.out_of_range and context.sentence.startswith("Out of range")
    assert (
        "128 tokens, longer than every one of the study's 6 prompts" in context.sentence and "10-77" in context.sentence
    )
    assert "#fff4e5" in explore.context_note(context).data  # shown as a warning
    short = explore_measure.analyse(MODEL, "Hi there.")
    inside = explore_measure.study_context(
        short, explore_measure.Study(run_params(), peers.assign(n_tokens=short.n_tokens)), CATEGORIES[0]
    )
    assert inside.out_of_range == "" and not inside.sentence.startswith("Out of range")


def test_static_sections_follow_the_explorer() -> None:
    pytest.importorskip("ipywidgets")
    page = explore.Page(run_params(), "First prompt here.", MODEL, live=True)
    followers = {name: page.explorer.follow(name) for name in explore.Explorer.TABS}
    assert "first" in str(followers["Tokens"].outputs).lower()
    page.explorer.prompt.value = "Zebras graze quietly."
    page.explorer.button.click()
    assert "zebra" in str(followers["Tokens"].outputs).lower() and "first" not in str(followers["Tokens"].outputs)
    pattern = _png_of(followers["Attention pattern"])
    page.explorer.head.value = 1
    assert _png_of(followers["Attention pattern"]) != pattern  # the selection too
    with pytest.raises(ValueError, match="unknown section"):
        page.explorer.follow("No such tab")
    static = explore.Page(run_params(), "First prompt here.", MODEL)  # the report's page: no widget
    assert static.explorer is None and static.analysis.text == "First prompt here."
