"""The study's figures on small synthetic tables: annotations readable, legends off the data."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers.report import figures, finding_figures  # noqa: E402
from helpers.study import CATEGORIES  # noqa: E402

SCALES = {"Tiny-Enc": (0.001, 70.0, 0.04), "Mid-Dec": (0.02, 40.0, 0.08), "Big-Dec": (-0.15, 35.0, 0.012)}


def cells() -> pd.DataFrame:
    """Model x category means at very different scales per model, some near zero (as in the default run)."""
    rng = np.random.default_rng(0)
    rows = []
    for model, (activation, entropy, sparsity) in SCALES.items():
        for category in CATEGORIES:
            rows.append(
                {
                    "Model": model,
                    "Category": category,
                    "Final_Activation": activation * rng.uniform(-1.5, 1.5),
                    "Attention_Entropy": entropy + rng.normal(0, 3),
                    "Max_Sparsity": sparsity * rng.uniform(0.8, 1.2),
                }
            )
    return pd.DataFrame(rows)


def _extents(figure: plt.Figure, artists: list) -> list:
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    return [artist.get_window_extent(renderer) for artist in artists]


def test_row_annotations_share_decimals_and_factor_out_tiny_scales() -> None:
    exponent, texts = figures.annotation_texts(np.array([0.000040, 0.000783, -0.001467, -0.0000001]))
    assert exponent == -3 and texts == ["0.04", "0.78", "-1.47", "0.00"]
    assert figures.annotation_texts(np.array([69.0, 75.91, 33.2])) == (0, ["69.0", "75.9", "33.2"])
    assert figures.annotation_texts(np.array([0.0427, 0.0371])) == (0, ["0.0427", "0.0371"])
    assert figures.annotation_texts(np.array([np.nan, 2.0]))[1] == ["", "2.00"]


@pytest.mark.parametrize("metric", ["final_activation", "attention_entropy", "max_sparsity"])
@pytest.mark.parametrize("by_model", [False, True])
def test_heatmap_annotations_never_overlap(metric: str, by_model: bool) -> None:
    figure = figures.category_heatmap(cells(), metric, by_model=by_model)
    texts = [t for t in figure.axes[0].texts if t.get_text()]
    assert len(texts) == len(SCALES) * len(CATEGORIES)
    boxes = _extents(figure, texts)
    assert not [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]
    assert max(len(t.get_text()) for t in texts) <= 7
    plt.close(figure)


def test_by_model_heatmap_colours_are_z_scores_within_each_model() -> None:
    figure = figures.category_heatmap(cells(), "attention_entropy", by_model=True)
    colours = figure.axes[0].collections[0].get_array().reshape(len(SCALES), len(CATEGORIES))
    assert np.allclose(colours.mean(axis=1), 0, atol=1e-9) and np.allclose(colours.std(axis=1), 1)
    raw = cells().pivot_table(index="Model", columns="Category", values="Attention_Entropy", sort=False)
    shown = [t.get_text() for t in figure.axes[0].texts][: len(CATEGORIES)]
    assert shown == [f"{v:.1f}" for v in raw.iloc[0][list(CATEGORIES)]]  # the annotations are raw values
    plt.close(figure)


def test_category_ranking_legend_covers_no_bar() -> None:
    comparison = pd.DataFrame(
        [
            {"Category": c, "metric": "Attention_Entropy", "published": 100 + 10 * i, "reproduced": 60 - i}
            for i, c in enumerate(CATEGORIES)
        ]
    )
    figure = figures.category_ranking(comparison)
    axis = figure.axes[0]
    legend, *bars = _extents(figure, [axis.get_legend(), *axis.patches])
    assert bars and not [bar for bar in bars if bar.width > 0 and legend.overlaps(bar)]
    plt.close(figure)


def test_entropy_vs_tokens_has_a_category_legend_off_the_panels() -> None:
    rng = np.random.default_rng(1)
    metrics = pd.DataFrame(
        [
            {"display_name": m, "category": c, "n_tokens": n, "attention_entropy": 2.0 * n + rng.normal()}
            for m in ("A", "B")
            for c in CATEGORIES
            for n in (8, 20, 40)
        ]
    )
    figure = figures.entropy_vs_tokens(metrics)
    assert len(figure.legends) == 1
    labels = [t.get_text() for t in figure.legends[0].get_texts()]
    assert labels == [c.replace("_", " ") for c in CATEGORIES]
    legend, *panels = _extents(figure, [figure.legends[0], *figure.axes])
    assert not [panel for panel in panels if legend.overlaps(panel)]
    plt.close(figure)


def test_a_heatmap_of_rows_at_different_scales_colours_each_row_on_its_own_range_and_says_so() -> None:
    figure = figures.category_heatmap(cells(), "final_activation")  # rows from 1e-3 to 1e-1
    colours = figure.axes[0].collections[0].get_array().reshape(len(SCALES), len(CATEGORIES))
    assert np.allclose(colours.min(axis=1), 0) and np.allclose(colours.max(axis=1), 1)
    assert "own range" in figure.axes[0].get_title() and "0 = lowest" in figure.axes[1].get_ylabel()
    plt.close(figure)
    same_scale = figures.category_heatmap(cells(), "attention_entropy")  # one colour bar is honest here
    assert "own range" not in same_scale.axes[0].get_title()
    plt.close(same_scale)


def _layers() -> pd.DataFrame:
    rows = []
    for model, n_layers in (("minilm-l6", 6), ("smollm2-135m", 30)):
        for layer in range(n_layers + 1):
            for statistic in ("near_zero_0.01", "attention_entropy", "hoyer", "near_zero_relative_0.01"):
                rows.append({"model": model, "layer": layer, "statistic": statistic, "value": layer / n_layers})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("draw", [figures.layer_profiles, finding_figures.sparsity_layer_profiles])
def test_layer_profiles_speak_words_units_and_display_names_in_a_readable_grid(draw: object) -> None:
    figure = draw(_layers())
    shown = [axis for axis in figure.axes if axis.get_visible()]
    for axis in shown:
        assert "_" not in axis.get_title() and axis.get_title()[0].isupper()  # words, not statistic names
        assert axis.get_ylabel() and "_" not in axis.get_ylabel()  # a unit
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["MiniLM-L6", "SmolLM2-135M"]
    assert figure.get_size_inches()[0] <= 11  # at 150 dpi at most 1650 px wide: two panels a row
    plt.close(figure)


def test_sparsity_variant_intervals_are_drawn_and_the_legend_sits_below_the_label() -> None:
    variants = pd.DataFrame(
        {
            "measure": ["Hoyer", "Hoyer", "fixed", "fixed"],
            "comparison": ["B / A", "decoders / encoders (models as replicates)"] * 2,
            "ratio": [1.525, np.nan, 20.0, np.nan],
            "low": [1.517, np.nan, 15.0, np.nan],
            "high": [1.533, np.nan, 26.0, np.nan],
            "verdict_sparser": [np.nan, "not testable here", np.nan, "not testable here"],
        }
    )
    figure = finding_figures.sparsity_variants(variants, (3.54, 14.2))
    axis = figure.axes[0]
    bars = [c for c in axis.collections if type(c).__name__ == "LineCollection"]
    assert bars and all(c.get_linewidth()[0] >= 2 for c in bars)  # interval bars thicker than the default
    assert "nan" not in [t.get_text() for t in axis.texts]
    label, legend = _extents(figure, [axis.xaxis.label, figure.legends[0]])
    assert 0 <= label.y0 - legend.y1 < 40  # no blank gap between the axis label and the legend
    plt.close(figure)


# --- legible at the width shown: every figure at most WIDEST inches wide, no text under SMALLEST_TEXT points ----------

EIGHT = ["MiniLM-L6", "paraphrase-MiniLM-L3-v2", "all-mpnet-base-v2", "EmbeddingGemma-300M", "SmolLM2-135M",
         "Gemma3-270M", "Qwen2.5-Coder-0.5B-Instruct", "Qwen2.5-Coder-1.5B-Instruct"]  # fmt: skip


def eight_model_figures() -> dict[str, plt.Figure]:
    """Every figure of notebooks 04, 06 and 08 drawn for eight models with long names and twelve categories."""
    rng = np.random.default_rng(2)
    metrics = pd.DataFrame(
        [
            {"display_name": m, "architecture": "encoder" if i < 4 else "decoder", "category": c, "n_tokens": n,
             "attention_entropy": n * 1.5 + rng.normal(), "final_activation": rng.normal(),
             "max_sparsity": rng.uniform(0, 0.4)}
            for i, m in enumerate(EIGHT) for c in CATEGORIES for n in (10, 30, 60)
        ]
    )  # fmt: skip
    layers = pd.DataFrame(
        [{"model": m, "layer": k, "statistic": s, "value": rng.uniform()} for m in EIGHT for k in range(13)
         for s in ("near_zero_0.01", "attention_entropy", "hoyer", "near_zero_relative_0.01")]
    )  # fmt: skip
    categories = pd.DataFrame(
        [{"model": m, "category": c, "matched_length_mean": rng.normal(60, 5), "matched_length_se": 0.5,
          "raw_mean": rng.normal(60, 8)} for m in EIGHT for c in CATEGORIES]
    )  # fmt: skip
    per_model = pd.DataFrame({"model": EIGHT, "verdict": ["does not hold"] * 6 + ["inconclusive"] * 2})
    curves = pd.DataFrame(
        [{"model": m, "category": c, "n_tokens": n, "difference": rng.normal(), "lower": -1.0, "upper": 1.0}
         for m in EIGHT for c in CATEGORIES[1:] for n in range(10, 60, 10)]
    )  # fmt: skip
    measures = ["|h| < 0.01, max over layers (the paper's S_max; primary)", "Hoyer sparsity, max over layers"]
    variants = pd.DataFrame(
        [{"measure": s, "comparison": f"{d} / {e}", "ratio": 2.0, "low": 1.8, "high": 2.2, "verdict_sparser": np.nan}
         for s in measures for d in EIGHT[4:] for e in EIGHT[:4]]
        + [{"measure": s, "comparison": "decoders / encoders (models as replicates)", "ratio": 3.0, "low": 0.5,
            "high": 20.0, "verdict_sparser": "inconclusive"} for s in measures]
    )  # fmt: skip
    probes = pd.DataFrame(
        [{"model": m, "relative_depth": d / 10, "accuracy": 0.9, "surface_accuracy": 0.2, "lexical_accuracy": 0.82,
          "layer0_accuracy": 0.86, "chance": 1 / 12} for m in EIGHT for d in range(11)]
    )  # fmt: skip
    units = pd.DataFrame(
        [{"model": m, "relative_depth": d / 10, "share": 0.3, "null_q95": 5.0, "units": 100, "selective": 30}
         for m in EIGHT for d in range(11)]
    )  # fmt: skip
    cells_eight = pd.DataFrame(
        [{"Model": m, "Category": c, "Final_Activation": rng.normal(), "Attention_Entropy": rng.normal(60, 5),
          "Max_Sparsity": rng.uniform()} for m in EIGHT for c in CATEGORIES]
    )  # fmt: skip
    comparison = pd.DataFrame(
        [{"Category": c, "metric": "Attention_Entropy", "published": 100 + i, "reproduced": 60 - i}
         for i, c in enumerate(CATEGORIES)]
    )  # fmt: skip
    return {
        "heatmap": figures.category_heatmap(cells_eight, "attention_entropy"),
        "heatmap_by_model": figures.category_heatmap(cells_eight, "attention_entropy", by_model=True),
        "architecture_comparison": figures.architecture_comparison(metrics),
        "layer_profiles": figures.layer_profiles(layers),
        "entropy_vs_tokens": figures.entropy_vs_tokens(metrics),
        "category_ranking": figures.category_ranking(comparison),
        "finding1_categories": finding_figures.finding1_categories(
            categories, per_model=per_model, verdict="does not hold"
        ),
        "finding1_length_contrasts": finding_figures.finding1_length_contrasts(curves),
        "sparsity_variants": finding_figures.sparsity_variants(variants, (2.2, 8.8), "inconclusive"),
        "sparsity_layer_profiles": finding_figures.sparsity_layer_profiles(layers),
        "signature_probe_depth": finding_figures.signature_probe_depth(
            probes, per_model.assign(verdict="holds"), "holds"
        ),
        "signature_units_depth": finding_figures.signature_units_depth(units),
    }


@pytest.mark.slow
def test_every_figure_is_at_most_12_inches_wide_with_no_text_under_9_points() -> None:
    """Shown 1100 px wide (a page at 1400 px), a figure at most WIDEST inches wide writes its smallest text at
    about 9 pt or more; the saved size (tight bounding box, legends included) is what counts."""
    import io

    from PIL import Image

    problems = {}
    for name, figure in eight_model_figures().items():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        width = Image.open(io.BytesIO(buffer.getvalue())).width / 100
        smallest = figures.smallest_text(figure)
        if width > figures.WIDEST + 0.6 or smallest < figures.SMALLEST_TEXT:
            problems[name] = (round(width, 1), smallest)
        plt.close(figure)
    assert problems == {}


@pytest.mark.slow
def test_each_findings_key_figure_says_its_verdict_in_its_title() -> None:
    drawn = eight_model_figures()
    assert drawn["finding1_categories"]._suptitle.get_text().startswith("Finding 1 does not hold:")
    assert "Does not hold in 6 of 8 models, inconclusive in 2" in drawn["finding1_categories"]._suptitle.get_text()
    assert drawn["sparsity_variants"].axes[0].get_title().startswith("Finding 2 inconclusive:")
    assert drawn["signature_probe_depth"]._suptitle.get_text().startswith("Finding 5 holds:")
    titles = [axis.get_title() for axis in drawn["finding1_categories"].axes if axis.get_visible()]
    assert titles[-1] == "Qwen2.5-Coder-1.5B-Instruct\ninconclusive"
    for figure in drawn.values():
        plt.close(figure)
