"""What finding 5 costs: pooling vectors during collection, and notebook 08's analysis at the default study's size.

Usage: ``python benchmarks/signatures_cost.py [--models tiny-llama minilm-l6] [--rounds 3] [--analysis-models 8]``

* Pooling: ``measure_with_layers`` on the study's prompts (batches of 16), with the mean-pooled vectors and
  with pooling switched off (``_BatchRecord.pool_vectors = False``), alternating, best of ``--rounds`` each,
  in CPU seconds of this process (``time.process_time``: less sensitive to other jobs on a shared machine).
* Analysis: ``signatures.analyse_model`` on synthetic data of the default study's largest size (540 prompts,
  12 categories, 29 hidden states of width 1536), once, times ``--analysis-models``, plus the transfer step.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from helpers import study
from helpers.base import paths
from helpers.core import streaming
from helpers.stats.findings import signatures


def pooling_cost(model: str, rounds: int) -> dict[str, float]:
    """CPU seconds of measuring the study's prompts with and without pooling (best of ``rounds``)."""
    import helpers

    loaded = helpers.load_model(model)
    texts = study.load_prompts(paths.PROMPTS / "cognitive_tasks.csv")["text"].tolist()
    original = streaming._BatchRecord.__init__
    best = {"with": np.inf, "without": np.inf}
    for _ in range(rounds):
        for mode in ("without", "with"):

            def init(self, *args, _mode=mode, **kwargs):  # noqa: ANN001, ANN002, ANN003
                original(self, *args, **kwargs)
                self.pool_vectors = _mode == "with"

            streaming._BatchRecord.__init__ = init
            try:
                start = time.process_time()
                helpers.measure_with_layers(loaded, texts, batch_size=16, progress=False)
                best[mode] = min(best[mode], time.process_time() - start)
            finally:
                streaming._BatchRecord.__init__ = original
    return {"model": model, **best, "extra": best["with"] / best["without"] - 1}


def synthetic_model(seed: int, layers: int = 29, width: int = 1536) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """540 prompts in 12 categories with a weak category direction, profiles of 3 + 3 x layers values."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([f"c{i:02d}" for i in range(12)], 45)
    n_tokens = rng.integers(8, 64, len(labels))
    prompts = pd.DataFrame(
        {
            "prompt_id": [f"p{i}" for i in range(len(labels))],
            "category": labels,
            "n_tokens": n_tokens,
            "n_words": (n_tokens * 0.75).astype(int),
            "n_digits": rng.poisson(1.0, len(labels)),
            "text": ["What is it?"] * len(labels),
        }
    )
    vectors = rng.standard_normal((len(labels), layers, width)).astype(np.float32)
    vectors[:, layers // 2 :] += rng.standard_normal((12, width))[pd.factorize(labels)[0]][:, None, :] * 0.1
    return prompts, rng.standard_normal((len(labels), 3 + 3 * layers)), vectors.astype(np.float16)


def analysis_cost(models: int) -> dict[str, float]:
    """CPU and wall seconds of one model's analysis at the largest default size, and the run estimate."""
    prompts, profiles, vectors = synthetic_model(0)
    wall, cpu = time.perf_counter(), time.process_time()
    signatures.analyse_model(prompts, profiles, vectors)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    grids = {f"m{i}": np.random.default_rng(i).standard_normal((540, 30)) for i in range(models)}
    start = time.process_time()
    signatures.transfer(grids, prompts["category"].to_numpy())
    transfer = time.process_time() - start
    return {"model_cpu_s": cpu, "model_wall_s": wall, "transfer_cpu_s": transfer, "run_cpu_s": models * cpu + transfer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["tiny-llama", "minilm-l6"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--analysis-models", type=int, default=8)
    args = parser.parse_args()
    for model in args.models:
        print(pooling_cost(model, args.rounds), flush=True)
    if args.analysis_models:
        print(analysis_cost(args.analysis_models), flush=True)


if __name__ == "__main__":
    main()
