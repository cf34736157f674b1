"""The benchmark scripts' reports: the README summary read off the targets table, the profile's gap table."""

from __future__ import annotations

import pytest

from benchmarks import profile_gap, run

RESULTS = """Machine: Some CPU (x86_64), 2 CPU cores, 24 GiB memory, torch 2.13.0+cpu, CPU; batch size 16.

### Targets (issue 25)

| model | target | ratio | wanted | met | route; why a target is missed |
|---|---|---:|---:|---|---|
| minilm-l6 | speed vs plain sdpa (default workload) | 0.93x | >= 0.9x | yes | ran on: one-pass kernel |
| smollm2-135m | speed vs plain sdpa (default workload) | 0.92x | >= 0.95x | NO | ran on: one-pass kernel; reasons |
| smollm2-135m T=8192 | peak memory vs plain sdpa | 1.20x | <= 1.1x | NO | ran on: one-pass kernel; reasons |
| smollm2-135m T=32768 | completes | not run: 8192 positions | completes | not run | |
"""


def test_the_readme_summary_counts_met_and_missed_targets_and_skips_those_not_run() -> None:
    text = " ".join(run.summary(RESULTS).split())
    assert text.startswith("Last standard `make bench` (Some CPU (x86_64), 2 CPU cores, 24 GiB memory):")
    assert "0.93x (minilm-l6), 0.92x (smollm2-135m) of a plain sdpa forward's tokens/s" in text
    assert "1 of 3 targets met" in text
    assert "missed: smollm2-135m: 0.92x (wanted >= 0.95x), smollm2-135m T=8192 memory: 1.20x (wanted <= 1.1x)" in text
    assert all(len(line) <= 100 for line in run.summary(RESULTS).splitlines())


def test_the_summary_goes_between_the_markers_only(tmp_path: pytest.TempPathFactory) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{run.SUMMARY_START}\nold\n{run.SUMMARY_END}\nafter\n")
    run.quote_summary(readme, "new")
    lines = readme.read_text().splitlines()
    assert lines[0] == "before" and lines[-1] == "after" and "new" in lines and "old" not in lines
    unmarked = tmp_path / "other.md"
    unmarked.write_text("no markers\n")
    run.quote_summary(unmarked, "new")
    assert unmarked.read_text() == "no markers\n"


def test_the_gap_table_groups_operators_and_counts_time_outside_them() -> None:
    plain = (10.0, {"aten::addmm": 8.0, "aten::_scaled_dot_product_flash_attention_for_cpu": 1.0, "aten::add": 0.5})
    measured = (
        11.5,
        {"aten::addmm": 8.0, "compendium::entropy_attention": 1.1, "aten::add": 0.5, "aten::lt": 0.4},
    )
    rows = {name: (a, b, extra) for name, a, b, extra in profile_gap.gap_table(plain, measured)}
    attention = rows["attention call (sdpa, flash or the one-pass kernel)"]
    assert attention == pytest.approx((1.0, 1.1, 0.1))
    assert rows["matrix products (the model's linear layers)"] == pytest.approx((8.0, 8.0, 0.0))
    assert rows[profile_gap.OUTSIDE] == pytest.approx((0.5, 1.5, 1.0))  # wall minus every operator's self time
    assert rows["aten::lt"] == pytest.approx((0.0, 0.4, 0.4))
    assert rows["**wall time**"] == pytest.approx((10.0, 11.5, 1.5))
    listed = sum(extra for name, _, _, extra in profile_gap.gap_table(plain, measured) if not name.startswith("**"))
    assert listed == pytest.approx(1.5)  # the rows add up to the gap
