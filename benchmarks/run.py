"""Benchmark: helpers.measure against a plain forward and the one-prompt-at-a-time way.

Usage: ``python benchmarks/run.py [--models ...] [--lengths 512 2048] [--quick]`` (``make bench``).

In one run, for each model: (a) a plain batched forward of the base model (no instrumentation,
texts in input order, batch size 16), under the model's default attention (sdpa) and under eager;
(b) the paper repository's way: one prompt at a time with ``output_attentions=True,
output_hidden_states=True`` and the metrics computed from the returned tuples; (c)
``helpers.measure``. Reported: tokens/s (real tokens, padding excluded) and, for long inputs of
T tokens, peak memory of one forward: CPU peak RSS of a fresh subprocess, or CUDA max allocated.
Writes ``benchmarks/results.md`` and prints it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helpers import load_model, measure, measure_with_layers, models, study  # noqa: E402
from helpers.models import LoadedModel  # noqa: E402
from helpers.study import DTYPES  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results.md"
DTYPE = "float32"  # set by --dtype / --full-size
DEFAULT_MODELS = ["minilm-l6", "smollm2-135m", "gemma3-270m"]
DEFAULT_LENGTHS = [512, 2048]
BATCH_SIZE = 16
REPEATS = 2  # each timing is the best of this many runs (times on a shared machine are noisy)
PLAIN, SINGLE, MEASURE = "plain forward (sdpa, length-sorted)", "one at a time, all outputs", "helpers.measure"
PLAIN_EAGER = "plain forward (eager)"
EAGER_SORTED = "plain forward (eager, length-sorted)"
COLLECT = "helpers.measure_with_layers (collection)"
TARGETS = {"speed vs plain": 0.85, "speed vs one at a time": 2.0, "peak memory vs plain eager": 1.3}


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def plain_forward(loaded: LoadedModel, texts: list[str], implementation: str, length_sorted: bool = True) -> float:
    """Seconds for a plain batched forward (no hooks, no outputs kept), length-sorted or in input order."""
    model, tokenizer = loaded.model, loaded.tokenizer
    model.set_attn_implementation(implementation)
    if length_sorted:  # the same batching measure uses: longest first, so each batch pads little
        lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
        texts = [texts[i] for i in sorted(range(len(texts)), key=lambda i: (-lengths[i], i))]
    start = time.perf_counter()
    with torch.inference_mode():
        for begin in range(0, len(texts), BATCH_SIZE):
            features = tokenizer(texts[begin : begin + BATCH_SIZE], padding=True, return_tensors="pt")
            model.base_model(**{k: v.to(_device()) for k, v in features.items()}, use_cache=False)
    _sync()
    model.set_attn_implementation("eager")
    return time.perf_counter() - start


def one_at_a_time(loaded: LoadedModel, texts: list[str]) -> float:
    """Seconds for the paper repository's way: each prompt alone, every layer's tensors returned."""
    model, tokenizer = loaded.model, loaded.tokenizer
    start = time.perf_counter()
    with torch.inference_mode():
        for text in texts:
            features = {k: v.to(_device()) for k, v in tokenizer(text, return_tensors="pt").items()}
            output = model.base_model(**features, output_attentions=True, output_hidden_states=True, use_cache=False)
            entropy = -sum((a * torch.log(a + 1e-12)).sum() for a in output.attentions) / (
                len(output.attentions) * output.attentions[0].shape[1]
            )
            sparsity = max((h.abs() < 0.01).float().mean() for h in output.hidden_states)
            (output.hidden_states[-1].mean().item(), float(entropy), float(sparsity))
    _sync()
    return time.perf_counter() - start


def instrumented(loaded: LoadedModel, texts: list[str], layers: bool = False) -> float:
    """Seconds for ``helpers.measure``, or with ``layers`` for ``measure_with_layers`` (what collection runs)."""
    start = time.perf_counter()
    if layers:
        measure_with_layers(loaded, texts, batch_size=BATCH_SIZE, progress=False)
    else:
        measure(loaded, texts, batch_size=BATCH_SIZE, progress=False)
    _sync()
    return time.perf_counter() - start


def load_seconds(name: str) -> float:
    """Seconds to import helpers and load ``name`` in a fresh process (GGUF weights already de-quantized)."""
    code = (
        "import time; start = time.perf_counter(); import torch; from helpers import load_model; "
        f"load_model({name!r}, dtype=torch.{DTYPE}); print(time.perf_counter() - start)"
    )
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environment)
    return float(result.stdout.strip().splitlines()[-1])


def throughput(name: str, texts: list[str]) -> list[dict]:
    loaded = load_model(name, dtype=DTYPES[DTYPE])
    loaded.model.to(_device())
    tokens = sum(len(ids) for ids in loaded.tokenizer(texts)["input_ids"])
    measure(loaded, texts[:4], progress=False)  # warm-up
    plain_forward(loaded, texts[:4], "sdpa")
    runs = {
        PLAIN: lambda: plain_forward(loaded, texts, "sdpa"),
        "plain forward (sdpa, input order)": lambda: plain_forward(loaded, texts, "sdpa", length_sorted=False),
        EAGER_SORTED: lambda: plain_forward(loaded, texts, "eager"),
        SINGLE: lambda: one_at_a_time(loaded, texts),
        MEASURE: lambda: instrumented(loaded, texts),
        COLLECT: lambda: instrumented(loaded, texts, layers=True),
    }
    rows = []
    for method, run in runs.items():
        seconds = min(run() for _ in range(REPEATS))
        rows.append(
            {
                "model": name,
                "method": method,
                "prompts": len(texts),
                "tokens": tokens,
                "seconds": seconds,
                "tokens_per_s": tokens / seconds,
            }
        )
    return rows


class PeakRss:
    """Highest resident set size while the block runs, sampled every millisecond by a thread."""

    def __enter__(self) -> PeakRss:
        self.process = psutil.Process()
        self.before = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def long_input_peak(name: str, length: int, method: str) -> dict:
    """Peak memory of one forward over ``length`` tokens (run in a fresh process by ``memory``).

    CPU: peak RSS during the forward, and its increase over the RSS with the model loaded. CUDA:
    max allocated during the forward, and its increase over the allocation before it.
    """
    loaded = load_model(name, dtype=DTYPES[DTYPE])
    loaded.model.to(_device())
    text = " ".join(["word"] * (length * 2))
    features = loaded.tokenizer([text], truncation=True, max_length=length, return_tensors="pt")
    assert features["input_ids"].shape[1] == length
    loaded.model.set_attn_implementation("eager" if method == PLAIN_EAGER else "sdpa")
    warm_up = loaded.tokenizer(["a short warm-up text"], return_tensors="pt")
    with torch.inference_mode():  # one-time costs (kernel set-up, first hooks) are not the long forward's
        if method == "helpers.measure":
            measure(loaded, ["a short warm-up text"], progress=False)
        else:
            loaded.model.base_model(**{k: v.to(_device()) for k, v in warm_up.items()}, use_cache=False)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        before_cuda = torch.cuda.memory_allocated()
    start = time.perf_counter()
    with PeakRss() as rss, torch.inference_mode():
        if method == "helpers.measure":
            measure(loaded, [text], max_length=length, progress=False)
        else:
            loaded.model.base_model(**{k: v.to(_device()) for k, v in features.items()}, use_cache=False)
        _sync()
    seconds = time.perf_counter() - start
    if torch.cuda.is_available():
        peak, before = torch.cuda.max_memory_allocated(), before_cuda
    else:
        peak, before = rss.peak, rss.before
    return {
        "model": name,
        "T": length,
        "method": method,
        "tokens_per_s": length / seconds,
        "peak_mib": peak / 2**20,
        "increase_mib": (peak - before) / 2**20,
    }


def memory(name: str, length: int) -> list[dict]:
    rows = []
    for method in (PLAIN_EAGER, MEASURE):
        command = [sys.executable, __file__, "--dtype", DTYPE, "--peak", name, str(length), method]
        result = subprocess.run(command, capture_output=True, text=True, check=True, env=os.environ)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return rows


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA), torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, CPU"


def report(speed: list[dict], peaks: list[dict], loads: dict[str, float]) -> str:
    lines = [
        f"Machine: {machine()}; batch size {BATCH_SIZE}; weights in {DTYPE} (statistics reduced in float32/64).",
        "",
        "### Throughput",
        "",
        "| model | method | prompts | tokens | seconds | tokens/s | vs plain (sdpa, sorted) | vs one at a time |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    checks = []
    for model in dict.fromkeys(row["model"] for row in speed):
        rows = {row["method"]: row for row in speed if row["model"] == model}
        plain, single = rows[PLAIN]["tokens_per_s"], rows[SINGLE]["tokens_per_s"]
        checks.append((model, "speed vs plain", rows[MEASURE]["tokens_per_s"] / plain))
        checks.append((model, "speed vs one at a time", rows[MEASURE]["tokens_per_s"] / single))
        for method, row in rows.items():
            lines.append(
                f"| {model} | {method} | {row['prompts']} | {row['tokens']} | {row['seconds']:.1f} | "
                f"{row['tokens_per_s']:.0f} | {row['tokens_per_s'] / plain:.2f}x | "
                f"{row['tokens_per_s'] / single:.2f}x |"
            )
    if peaks:
        lines += [
            "",
            "### Long inputs: one forward of T tokens (tokens/s of that one forward; peak memory)",
            "",
            "| model | T | method | tokens/s | peak MiB | increase over the loaded model, MiB | peak vs plain eager |",
            "|---|---:|---|---:|---:|---:|---:|",
        ]
        for row in peaks:
            plain = next(
                r for r in peaks if r["model"] == row["model"] and r["T"] == row["T"] and r["method"] == PLAIN_EAGER
            )
            lines.append(
                f"| {row['model']} | {row['T']} | {row['method']} | {row['tokens_per_s']:.0f} | "
                f"{row['peak_mib']:.0f} | {row['increase_mib']:.0f} | {row['peak_mib'] / plain['peak_mib']:.2f}x |"
            )
            if row["method"] == MEASURE:
                checks.append(
                    (f"{row['model']} T={row['T']}", "peak memory vs plain eager", row["peak_mib"] / plain["peak_mib"])
                )
    lines += [
        "",
        "### Where collection spends its time",
        "",
        "What one model's collection job does: load the model in a fresh process (GGUF weights de-quantized "
        "once and cached), then `measure_with_layers` on every prompt. Model compute is the time of a plain "
        "eager forward of the same batches; the rest is the statistics, the tables and the load.",
        "",
        "| model | load s | measure_with_layers s | plain eager forward s | model compute share |",
        "|---|---:|---:|---:|---:|",
    ]
    for model, load in loads.items():
        rows = {row["method"]: row for row in speed if row["model"] == model}
        collect, eager = rows[COLLECT]["seconds"], rows[EAGER_SORTED]["seconds"]
        lines.append(f"| {model} | {load:.1f} | {collect:.1f} | {eager:.1f} | {eager / (load + collect):.0%} |")
    lines += ["", "### Targets (issue 5)", "", "| model | target | ratio | wanted | met |", "|---|---|---:|---:|---|"]
    for model, target, ratio in checks:
        wanted = TARGETS[target]
        met = ratio <= wanted if target.startswith("peak") else ratio >= wanted
        relation = "<=" if target.startswith("peak") else ">="
        lines.append(f"| {model} | {target} | {ratio:.2f}x | {relation} {wanted}x | {'yes' if met else 'NO'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--lengths", nargs="*", type=int, default=DEFAULT_LENGTHS)
    parser.add_argument("--quick", action="store_true", help="2 prompts per category instead of all")
    parser.add_argument(
        "--full-size",
        action="store_true",
        help="the paper's six architectures at full size with random weights (bf16 on a GPU); meant for a GPU",
    )
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), help="weights dtype (default: float32, bf16 with --full-size on CUDA)"
    )
    parser.add_argument("--peak", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global DTYPE
    DTYPE = args.dtype or ("bfloat16" if args.full_size and torch.cuda.is_available() else "float32")
    if args.full_size:
        args.models = list(models.RANDOM)
    torch.manual_seed(0)
    if args.peak:
        name, length, method = args.peak
        print(json.dumps(long_input_peak(name, int(length), method)))
        return 0
    prompts = study.load_prompts(ROOT / "data/prompts/cognitive_tasks.csv", per_category=2 if args.quick else None)
    texts = prompts["text"].tolist()
    speed = [row for name in args.models for row in throughput(name, texts)]
    peaks = []
    for name in args.models:
        limit = getattr(load_model(name, dtype=DTYPES[DTYPE]).model.config, "max_position_embeddings", 10**9)
        peaks += [row for length in args.lengths if length <= limit for row in memory(name, length)]
    loads = {name: load_seconds(name) for name in args.models}
    text = report(speed, peaks, loads)
    standard = args.models == DEFAULT_MODELS and not args.quick and args.lengths == DEFAULT_LENGTHS and not args.dtype
    if standard:  # only the standard run is quoted in the READMEs
        RESULTS.write_text(text)
        for readme in (ROOT / "benchmarks" / "README.md", ROOT / "README.md"):
            quote(readme, text)
    else:
        (ROOT / "benchmarks" / f"results_{'full_size' if args.full_size else 'custom'}.md").write_text(text)
    print(text)
    return 0


START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"


def quote(readme: Path, text: str) -> None:
    """Put ``text`` between the benchmark markers of ``readme`` (left alone if it has none)."""
    content = readme.read_text() if readme.is_file() else ""
    if START not in content or END not in content:
        return
    head, rest = content.split(START, 1)
    tail = rest.split(END, 1)[1]
    note = "<!-- written by benchmarks/run.py (make bench) from benchmarks/results.md; do not edit by hand -->"
    readme.write_text(f"{head}{START}\n{note}\n\n{text}\n{END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
