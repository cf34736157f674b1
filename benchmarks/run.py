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

from helpers import load_model, measure, study  # noqa: E402
from helpers.models import LoadedModel  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results.md"
BATCH_SIZE = 16


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def plain_forward(loaded: LoadedModel, texts: list[str], implementation: str) -> float:
    """Seconds for a plain batched forward, input order, no hooks, no outputs kept."""
    model, tokenizer = loaded.model, loaded.tokenizer
    model.set_attn_implementation(implementation)
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


def instrumented(loaded: LoadedModel, texts: list[str]) -> float:
    start = time.perf_counter()
    measure(loaded, texts, batch_size=BATCH_SIZE, progress=False)
    _sync()
    return time.perf_counter() - start


def throughput(name: str, texts: list[str]) -> list[dict]:
    loaded = load_model(name)
    loaded.model.to(_device())
    tokens = sum(len(ids) for ids in loaded.tokenizer(texts)["input_ids"])
    measure(loaded, texts[:4], progress=False)  # warm-up
    plain_forward(loaded, texts[:4], "sdpa")
    runs = {
        "plain forward (sdpa)": lambda: plain_forward(loaded, texts, "sdpa"),
        "plain forward (eager)": lambda: plain_forward(loaded, texts, "eager"),
        "one at a time, all outputs": lambda: one_at_a_time(loaded, texts),
        "helpers.measure": lambda: instrumented(loaded, texts),
    }
    rows = []
    for method, run in runs.items():
        seconds = run()
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
    loaded = load_model(name)
    loaded.model.to(_device())
    text = " ".join(["word"] * (length * 2))
    features = loaded.tokenizer([text], truncation=True, max_length=length, return_tensors="pt")
    assert features["input_ids"].shape[1] == length
    loaded.model.set_attn_implementation("eager" if method == "plain forward (eager)" else "sdpa")
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        before_cuda = torch.cuda.memory_allocated()
    with PeakRss() as rss, torch.inference_mode():
        if method == "helpers.measure":
            measure(loaded, [text], max_length=length, progress=False)
        else:
            loaded.model.base_model(**{k: v.to(_device()) for k, v in features.items()}, use_cache=False)
    if torch.cuda.is_available():
        peak, before = torch.cuda.max_memory_allocated(), before_cuda
    else:
        peak, before = rss.peak, rss.before
    return {
        "model": name,
        "T": length,
        "method": method,
        "peak_mib": peak / 2**20,
        "increase_mib": (peak - before) / 2**20,
    }


def memory(name: str, length: int) -> list[dict]:
    rows = []
    for method in ("plain forward (eager)", "helpers.measure"):
        command = [sys.executable, __file__, "--peak", name, str(length), method]
        result = subprocess.run(command, capture_output=True, text=True, check=True, env=os.environ)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return rows


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA), torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, CPU"


def report(speed: list[dict], peaks: list[dict]) -> str:
    lines = [
        f"Machine: {machine()}; batch size {BATCH_SIZE}; float32.",
        "",
        "### Throughput",
        "",
        "| model | method | prompts | tokens | seconds | tokens/s | vs plain (sdpa) | vs one at a time |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model in dict.fromkeys(row["model"] for row in speed):
        rows = {row["method"]: row for row in speed if row["model"] == model}
        plain, single = rows["plain forward (sdpa)"]["tokens_per_s"], rows["one at a time, all outputs"]["tokens_per_s"]
        for method, row in rows.items():
            lines.append(
                f"| {model} | {method} | {row['prompts']} | {row['tokens']} | {row['seconds']:.1f} | "
                f"{row['tokens_per_s']:.0f} | {row['tokens_per_s'] / plain:.2f}x | "
                f"{row['tokens_per_s'] / single:.2f}x |"
            )
    if peaks:
        lines += [
            "",
            "### Peak memory of one long input",
            "",
            "| model | T | method | peak MiB | increase over the loaded model, MiB | peak vs plain eager |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for row in peaks:
            plain = next(
                r
                for r in peaks
                if r["model"] == row["model"] and r["T"] == row["T"] and r["method"] == "plain forward (eager)"
            )
            lines.append(
                f"| {row['model']} | {row['T']} | {row['method']} | {row['peak_mib']:.0f} | "
                f"{row['increase_mib']:.0f} | {row['peak_mib'] / plain['peak_mib']:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["minilm-l6", "smollm2-135m", "gemma3-270m"])
    parser.add_argument("--lengths", nargs="*", type=int, default=[512, 2048])
    parser.add_argument("--quick", action="store_true", help="2 prompts per category instead of all")
    parser.add_argument("--peak", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
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
        limit = getattr(load_model(name).model.config, "max_position_embeddings", 10**9)
        peaks += [row for length in args.lengths if length <= limit for row in memory(name, length)]
    text = report(speed, peaks)
    RESULTS.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
