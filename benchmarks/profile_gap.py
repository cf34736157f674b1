"""Where `helpers.measure` spends the time a plain sdpa forward does not: a torch.profiler profile.

Usage: ``python benchmarks/profile_gap.py [--model smollm2-135m] [--prompts N | --length T]`` profiles one workload;
``python benchmarks/profile_gap.py --missed`` (what ``make bench`` runs after ``run.py``'s standard run, about 4
minutes per workload on 2 cores) profiles SmolLM2's default workload and the workload of every speed target
``benchmarks/results.md`` records as missed, each under the dispatch it was missed on.

One workload in one fresh process: the default workload (the study's 540 prompts, batches of 16, length-sorted)
or one prompt of T tokens; warmed up, then profiled ``ROUNDS`` times interleaved with the CPU profiler: a plain
sdpa forward (the limit), ``measure`` (the kernels: the one-pass attention kernel and the statistics kernels) and
``measure`` with the statistics by torch operations (the route before the statistics kernels). Each operator's
self time (time inside it, not in the operators it calls) is compared; what is in no operator (Python: the
per-layer hooks, building the tables, the tokenizer) is the wall time minus the operators' total. The profiler
slows every run, so the table explains the gap, and ``run.py``'s ratios (no profiler) give its size. ``--missed``
writes ``benchmarks/profile.md`` and quotes it in ``docs/benchmarks.md`` between the profile markers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
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

from benchmarks.run import (  # noqa: E402
    BATCH_SIZE,
    OTHER_DISPATCH,
    RESULTS,
    dispatch,
    long_text,
    machine,
    plain_forward,
    targets,
)
from helpers import load_model, measure, study  # noqa: E402
from helpers.base import store  # noqa: E402
from helpers.core import kernels, streaming  # noqa: E402

PROFILE = ROOT / "benchmarks" / "profile.md"
START, END = "<!-- profile:start -->", "<!-- profile:end -->"
OUTSIDE = "in no operator (Python: hooks, tables, tokenizer)"
STATISTICS = "statistics kernels (hidden states, attention rows)"
GROUPS = {  # an operator's group, by a part of its name; the rest are listed one by one
    "attention call (sdpa, flash or the one-pass kernel)": ("scaled_dot_product", "flash", kernels.PROFILE_NAME),
    STATISTICS: (kernels.STATISTICS_PROFILE_NAME, kernels.ATTENTION_STATISTICS_PROFILE_NAME),
    "matrix products (the model's linear layers)": ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul"),
}
SHOWN = 10  # operators listed by how much more time they take under measure
ROUNDS = 2  # each run profiled this many times, interleaved; the fastest round is shown
STANDARD = ("smollm2-135m", None, None)  # (model, T or None for the default workload, dispatch or None: this one)
MEASURED = ("helpers.measure", "helpers.measure, statistics by torch operations")


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


def gap_table(plain: tuple[float, dict[str, float]], *measured: tuple[float, dict[str, float]]) -> list[tuple]:
    """Rows (what, plain s, then for each measured run: its s and its extra s): the groups, the operators with most
    extra time under the first measured run, the rest, the wall time."""
    runs = (plain, *measured)
    grouped: dict[str, list[float]] = {}
    for column, (wall, operators) in enumerate(runs):
        for operator, seconds in operators.items():
            grouped.setdefault(_group(operator), [0.0] * len(runs))[column] += seconds
        grouped.setdefault(OUTSIDE, [0.0] * len(runs))[column] += wall - sum(operators.values())
    fixed = [*GROUPS, OUTSIDE]
    others = sorted((k for k in grouped if k not in fixed), key=lambda k: grouped[k][0] - grouped[k][1])
    rest = [sum(grouped[operator][column] for operator in others[SHOWN:]) for column in range(len(runs))]
    rows = [(name, *grouped.get(name, [0.0] * len(runs))) for name in (*fixed, *others[:SHOWN])]
    rows.append((f"{len(others[SHOWN:])} other operators", *rest))
    rows.append(("**wall time**", *(wall for wall, _ in runs)))
    return [
        (name, values[0], *(x for value in values[1:] for x in (value, value - values[0]))) for name, *values in rows
    ]


def workload_name(model: str, length: int | None, prompts: int, tokens: int) -> str:
    if length:
        return f"{model}, one prompt of {length} tokens"
    return f"{model}, the default workload ({prompts} prompts, {tokens} tokens, batches of {BATCH_SIZE})"


def report(title: str, rows: list[tuple], with_route_before: bool) -> str:
    total = rows[-1][3]
    header = "| where the time goes | plain sdpa forward s | helpers.measure s | extra s | share of the gap |"
    rule = "|---|---:|---:|---:|---:|"
    if with_route_before:
        header += " statistics by torch operations s | extra s |"
        rule += "---:|---:|"
    lines = [f"#### {title}", "", header, rule]
    for name, plain, measured, extra, *before in rows:
        share = f"{extra / total:.0%}" if total > 0 and not name.startswith("**") else ""
        shown = name.replace("|", r"\|")  # a Markdown table cell
        line = f"| {shown} | {plain:.2f} | {measured:.2f} | {extra:+.2f} | {share} |"
        if with_route_before:
            line += f" {before[0]:.2f} | {before[1]:+.2f} |"
        lines.append(line)
    big = max(rows[:-1], key=lambda row: row[3])
    lines += [
        "",
        f"Under the profiler `measure` takes {rows[-1][2] / rows[-1][1]:.2f}x the plain forward's time; the largest "
        f"part of the extra {total:.2f} s is {big[0]} ({big[3]:+.2f} s).",
    ]
    if with_route_before:
        statistics = next(row for row in rows if row[0] == STATISTICS)
        lines[-1] += (
            f" With the statistics by torch operations (the route before the statistics kernels) it takes "
            f"{rows[-1][4] / rows[-1][1]:.2f}x; the statistics kernels themselves take {statistics[2]:.2f} s."
        )
    return "\n".join(lines) + "\n"


def profile_workload(model: str, prompts: int | None, length: int | None, with_route_before: bool) -> str:
    """The profile of one workload in this process, as a Markdown section."""
    texts = study.load_prompts(ROOT / "data/prompts/cognitive_tasks.csv")["text"].tolist()[:prompts]
    loaded = load_model(model, dtype=torch.float32)
    if length:
        texts = [long_text(length)]
    tokens = sum(len(ids) for ids in loaded.tokenizer(texts, truncation=bool(length), max_length=length)["input_ids"])
    measure(loaded, texts[:4] if not length else ["a short warm-up text"], progress=False)  # the kernels, the hooks
    plain_forward(loaded, texts[:4] if not length else ["a short warm-up text"], "sdpa")

    def plain() -> object:
        if not length:
            return plain_forward(loaded, texts, "sdpa")
        features = loaded.tokenizer(texts, truncation=True, max_length=length, return_tensors="pt")
        loaded.model.set_attn_implementation("sdpa")
        with torch.inference_mode():
            loaded.model.base_model(**features, use_cache=False)
        loaded.model.set_attn_implementation("eager")
        return None

    def measured() -> object:
        return measure(loaded, texts, batch_size=BATCH_SIZE, max_length=length, progress=False)

    def before() -> object:
        streaming.STATISTICS_KERNELS = False
        try:
            return measured()
        finally:
            streaming.STATISTICS_KERNELS = True

    runs = {"plain": plain, MEASURED[0]: measured, **({MEASURED[1]: before} if with_route_before else {})}
    best = fastest(runs)
    rows = gap_table(best["plain"], *(best[name] for name in runs if name != "plain"))
    title = f"{workload_name(model, length, len(texts), tokens)}; {dispatch()}"
    return report(title, rows, with_route_before)


def missed_workloads(results: str) -> list[tuple[str, int | None, str | None]]:
    """(model, T or None, dispatch or None) of every missed speed target in a results page, SmolLM2's default
    workload first (the standard profile, always shown)."""
    found = [STANDARD]
    for row in targets(results):
        if row["met"] != "NO" or "peak memory" in row["target"]:
            continue
        match = re.fullmatch(r"(?P<model>[\w.-]+)(?: \((?P<isa>\w+)\))?(?: T=(?P<length>\d+))?", row["model"])
        if match:
            length = int(match["length"]) if match["length"] else None
            workload = (match["model"], length, match["isa"])
            if workload not in found:
                found.append(workload)
    return found


def page(sections: list[str]) -> str:
    intro = (
        f"Run on {date.today()}; machine: {machine()}. Each workload in a fresh process, profiled {ROUNDS} times "
        "interleaved after a warm-up, its fastest round shown; self time of each operator, seconds. SmolLM2's "
        "default workload always, then the workload of every speed target the last standard run missed."
    )
    return "\n".join([intro, "", *sections])


def quote(page_path: Path, text: str) -> None:
    """Put ``text`` between the profile markers of ``page_path`` (left alone if it has none)."""
    note = "<!-- written by benchmarks/profile_gap.py (make bench) from benchmarks/profile.md; do not edit by hand -->"
    store.write_between_markers(page_path, START, END, f"\n{note}\n\n{text}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=STANDARD[0])
    parser.add_argument("--prompts", type=int, default=None, help="the first N prompts (default: all 540)")
    parser.add_argument("--length", type=int, default=None, help="one prompt of this many tokens instead")
    parser.add_argument("--missed", action="store_true", help="profile the standard and every missed workload")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.missed:
        with_route_before = (args.model, args.length) == STANDARD[:2]
        text = profile_workload(args.model, args.prompts, args.length, with_route_before)
        print(json.dumps(text) if args.json else text)
        return 0
    sections = []
    for model, length, isa in missed_workloads(RESULTS.read_text() if RESULTS.is_file() else ""):
        environment = {**os.environ, **({"ATEN_CPU_CAPABILITY": isa.lower()} if isa else {})}
        if isa and isa != OTHER_DISPATCH:
            continue  # only the other dispatch run.py measures can be set by this environment
        command = [sys.executable, __file__, "--json", "--model", model, *(["--length", str(length)] if length else [])]
        print(f"profile: {model} {length or 'default workload'} {isa or ''}", file=sys.stderr)
        result = subprocess.run(command, capture_output=True, text=True, env=environment, check=True)
        sections.append(json.loads(result.stdout.strip().splitlines()[-1]))
    text = page(sections)
    PROFILE.write_text(text)
    quote(ROOT / "docs" / "benchmarks.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
