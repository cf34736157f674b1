"""Where `helpers.measure` spends the time a plain sdpa forward does not: a torch.profiler profile.

Usage: ``python benchmarks/profile_gap.py [--model smollm2-135m] [--prompts N]`` (``make bench`` runs
it after ``run.py`` for its standard run; about 3 minutes on 2 cores).

One model in one fresh process, the default workload (the study's 540 prompts, batches of 16,
length-sorted), warmed up, then profiled twice with the CPU profiler: a plain sdpa forward (the
limit) and ``measure`` on the fused path. Each operator's self time (time inside it, not in the
operators it calls) is compared; what is in no operator (Python: the per-layer hooks, building
the tables, the tokenizer) is the wall time minus the operators' total. The profiler slows both
runs, so the table explains the gap, and ``run.py``'s ratios (no profiler) give its size. Writes
``benchmarks/profile.md`` and quotes it in ``docs/benchmarks.md`` between the profile markers.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity
from torch.profiler import profile as torch_profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.run import BATCH_SIZE, machine, plain_forward  # noqa: E402
from helpers import load_model, measure, study  # noqa: E402
from helpers.base import store  # noqa: E402
from helpers.core import kernels  # noqa: E402

RESULTS = ROOT / "benchmarks" / "profile.md"
START, END = "<!-- profile:start -->", "<!-- profile:end -->"
OUTSIDE = "in no operator (Python: hooks, tables, tokenizer)"
GROUPS = {  # an operator's group, by a part of its name; the rest are listed one by one
    "attention call (sdpa, flash or the one-pass kernel)": ("scaled_dot_product", "flash", kernels.PROFILE_NAME),
    "matrix products (the model's linear layers)": ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul"),
}
SHOWN = 10  # operators listed by how much more time they take under measure
ROUNDS = 2  # each run profiled this many times, interleaved; the fastest round is shown


def profiled(run: Callable[[], object]) -> tuple[float, dict[str, float]]:
    """Wall seconds of ``run()`` under the CPU profiler, and every operator's self time in seconds."""
    with torch_profile(activities=[ProfilerActivity.CPU]) as profiler:
        start = time.perf_counter()
        run()
        wall = time.perf_counter() - start
    return wall, {event.key: event.self_cpu_time_total / 1e6 for event in profiler.key_averages()}


def fastest(runs: dict[str, Callable[[], object]]) -> dict[str, tuple[float, dict[str, float]]]:
    """Each run profiled ``ROUNDS`` times, interleaved; the profile of its fastest round (the least disturbed)."""
    best: dict[str, tuple[float, dict[str, float]]] = {}
    for _ in range(ROUNDS):
        for name, run in runs.items():
            result = profiled(run)
            if name not in best or result[0] < best[name][0]:
                best[name] = result
    return best


def _group(operator: str) -> str:
    return next((group for group, parts in GROUPS.items() if any(part in operator for part in parts)), operator)


def gap_table(plain: tuple[float, dict[str, float]], measured: tuple[float, dict[str, float]]) -> list[tuple]:
    """Rows (what, plain s, measure s, extra s): the groups, the operators with most extra time, the rest."""
    grouped: dict[str, list[float]] = {}
    for column, (wall, operators) in enumerate((plain, measured)):
        for operator, seconds in operators.items():
            grouped.setdefault(_group(operator), [0.0, 0.0])[column] += seconds
        grouped.setdefault(OUTSIDE, [0.0, 0.0])[column] += wall - sum(operators.values())
    fixed = [*GROUPS, OUTSIDE]
    others = sorted((k for k in grouped if k not in fixed), key=lambda k: grouped[k][0] - grouped[k][1])
    rest = [0.0, 0.0]
    for operator in others[SHOWN:]:
        rest = [rest[0] + grouped[operator][0], rest[1] + grouped[operator][1]]
    rows = [(name, *grouped.get(name, [0.0, 0.0])) for name in (*fixed, *others[:SHOWN])]
    rows.append((f"{len(others[SHOWN:])} other operators", *rest))
    rows.append(("**wall time**", plain[0], measured[0]))
    return [(name, a, b, b - a) for name, a, b in rows]


def report(model: str, prompts: int, tokens: int, rows: list[tuple]) -> str:
    total = rows[-1][3]
    lines = [
        f"Run on {date.today()}; machine: {machine()}. {model}, the default workload ({prompts} prompts, "
        f"{tokens} tokens, batches of {BATCH_SIZE}), each run profiled {ROUNDS} times interleaved after a warm-up, "
        "its fastest round shown; self time of each operator, seconds.",
        "",
        "| where the time goes | plain sdpa forward s | helpers.measure s | extra s | share of the gap |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, plain, measured, extra in rows:
        share = f"{extra / total:.0%}" if total > 0 and not name.startswith("**") else ""
        shown = name.replace("|", r"\|")  # a Markdown table cell
        lines.append(f"| {shown} | {plain:.2f} | {measured:.2f} | {extra:+.2f} | {share} |")
    big = max(rows[:-1], key=lambda row: row[3])
    lines += [
        "",
        f"Under the profiler `measure` takes {rows[-1][2] / rows[-1][1]:.2f}x the plain forward's time; the largest "
        f"part of the extra {total:.2f} s is {big[0]} ({big[3]:+.2f} s).",
    ]
    return "\n".join(lines) + "\n"


def quote(page: Path, text: str) -> None:
    """Put ``text`` between the profile markers of ``page`` (left alone if it has none)."""
    note = "<!-- written by benchmarks/profile_gap.py (make bench) from benchmarks/profile.md; do not edit by hand -->"
    store.write_between_markers(page, START, END, f"\n{note}\n\n{text}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=None, help="the first N prompts (default: all 540)")
    args = parser.parse_args()
    texts = study.load_prompts(ROOT / "data/prompts/cognitive_tasks.csv")["text"].tolist()[: args.prompts]
    loaded = load_model(args.model, dtype=torch.float32)
    tokens = sum(len(ids) for ids in loaded.tokenizer(texts)["input_ids"])
    measure(loaded, texts[:4], progress=False)  # warm-up: the kernel, the allocator, the hooks
    plain_forward(loaded, texts[:4], "sdpa")
    best = fastest(
        {
            "plain": lambda: plain_forward(loaded, texts, "sdpa"),
            "measure": lambda: measure(loaded, texts, batch_size=BATCH_SIZE, progress=False),
        }
    )
    text = report(args.model, len(texts), tokens, gap_table(best["plain"], best["measure"]))
    if args.prompts is None and args.model == "smollm2-135m":  # the standard profile is the one quoted
        RESULTS.write_text(text)
        quote(ROOT / "docs" / "benchmarks.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
