"""The CPU kernels of ``measure``: attention with each row's entropy in one pass, and a layer's statistics.

``cpu_kernel()`` builds (once per machine, torch version and CPU capability, into ``.cache/kernels/``) and
loads the C++ extension (``entropy_attention.cpp``, ``hidden_statistics.cpp``, ``attention_statistics.cpp``,
``module.cpp``) with ``torch.utils.cpp_extension``; ``python -m helpers.core.kernels build`` does it ahead of
time (``make install``). If it cannot be built or loaded (no compiler, another platform), ``cpu_kernel()``
returns None, ``unavailable()`` says why, and ``measure`` keeps its exact torch routes (two flash calls for the
entropies, ``metrics.hidden_state_statistics`` and ``metrics.mean_pooled`` for the hidden states, the
``metrics`` functions for the attention statistics). ``COMPENDIUM_KERNEL=off`` switches the extension off (for
comparisons and benchmarks).

``entropy_attention(query, key, value, ...)`` runs it: query (B, H, Q, D), key/value
(B, H_kv, K, D|Dv) on the CPU, any float dtype (computed in float32); returns the output
(B, Q, H, Dv) in the query's dtype (transformers' layout after attention), the log-sum-exp and the
row entropies (B, H, Q) in float32. The GPU counterpart, in Triton, is ``helpers.core.kernels.triton_entropy``.

``hidden_statistics(hidden, token_mask, epsilons)`` reduces one layer's hidden states (B, T, D) in one call:
every statistic of ``metrics.hidden_state_statistics`` and the mean-pooled vectors of ``metrics.mean_pooled``,
bit for bit (the per-row sums follow torch's own summation order; ``row_sums_match_torch`` checks that once per
process and otherwise has torch compute them). ``attention_statistics(rows, query_mask, n_keys)`` reduces one
layer's row entropies to its per-head and normalised sums (float64; equal to the ``metrics`` functions to float64
rounding).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch

from helpers.base import paths

SOURCES: tuple[Path, ...] = tuple(
    Path(__file__).with_name(name)
    for name in ("entropy_attention.cpp", "hidden_statistics.cpp", "attention_statistics.cpp", "module.cpp")
)
CODE_FILES = ("*.cpp",)
"""The C++ sources this package compiles and runs: part of the code behind every measurement (helpers.base.code)."""
BUILD_ROOT: Path = paths.CACHE / "kernels"
SWITCH = "COMPENDIUM_KERNEL"
"""Environment variable: "off" keeps the fused path on its two-call route (the kernel is not built)."""

PROFILE_NAME = "compendium::entropy_attention"
"""The one-pass kernel's name in a torch.profiler profile."""
STATISTICS_PROFILE_NAME = "compendium::hidden_statistics"
ATTENTION_STATISTICS_PROFILE_NAME = "compendium::attention_statistics"
"""The statistics kernels' names in a torch.profiler profile (each C++ function records its own)."""
ONE_PASS = "one-pass kernel"
TWO_CALL = "two flash calls"
"""The names a run records (``attrs["attention_kernel"]``) for the two fused routes."""
TORCH_OPERATIONS = "torch operations"
"""The name a run records (``attrs["statistics_kernel"]``) for hidden states reduced without the kernel (else
``ONE_PASS``)."""

_CAPABILITY_FLAGS: dict[str, list[str]] = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mavx2"],
    "AVX2": ["-mavx2", "-mfma", "-mf16c"],
}
_lock = threading.Lock()
_state: dict[str, object] = {}


def capability() -> str:
    """The CPU capability torch dispatches its own kernels to here ("AVX512", "AVX2", "DEFAULT", ...)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "DEFAULT"


def build_name() -> str:
    """Extension and folder name: one build per torch version and CPU capability (a shared .cache stays valid)."""
    version = torch.__version__.split("+")[0].replace(".", "_")
    return f"compendium_kernels_torch{version}_{capability().lower()}"


def _compile_flags() -> list[str]:
    """-O3, OpenMP (at::parallel_for) and at::vec at the capability torch itself uses here; never -march=native.

    (``hidden_statistics.cpp`` turns off the contraction of a * b + c into one fused multiply-add for itself: it
    repeats torch's own sums operation for operation.)
    """
    level = capability()
    flags = ["-O3", "-fopenmp", "-fno-math-errno"]
    if level in _CAPABILITY_FLAGS and sys.platform.startswith("linux"):
        return [*flags, *_CAPABILITY_FLAGS[level], f"-DCPU_CAPABILITY={level}", f"-DCPU_CAPABILITY_{level}"]
    return [*flags, "-DCPU_CAPABILITY=DEFAULT"]


def _ninja_on_path() -> None:
    """Put the ninja of the ``ninja`` package (a pinned dependency) on PATH for cpp_extension, if it is installed."""
    try:
        import ninja  # noqa: PLC0415 (optional: a system ninja works too)
    except ImportError:
        return
    directory = getattr(ninja, "BIN_DIR", None)
    if directory and directory not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([directory, os.environ.get("PATH", "")])


def build(verbose: bool = False) -> ModuleType:
    """Compile (if the cached build is missing or stale) and import the CPU kernel; raises on failure."""
    from torch.utils import cpp_extension  # noqa: PLC0415 (slow import, only when building)

    _ninja_on_path()
    directory = BUILD_ROOT / build_name()
    directory.mkdir(parents=True, exist_ok=True)
    return cpp_extension.load(
        name=build_name(),
        sources=[str(source) for source in SOURCES],
        extra_cflags=_compile_flags(),
        extra_ldflags=["-fopenmp"],
        build_directory=str(directory),
        verbose=verbose,
    )


def cpu_kernel() -> ModuleType | None:
    """The built CPU kernel, or None (switched off with COMPENDIUM_KERNEL=off, or it could not be built)."""
    if os.environ.get(SWITCH, "").lower() in ("off", "0", "false", "no"):
        return None
    with _lock:
        if "module" not in _state:
            try:
                _state["module"] = build()
                _state["reason"] = None
            except Exception as error:  # any failure to compile or load: the two-call route runs
                _state["module"] = None
                _state["reason"] = f"{type(error).__name__}: {str(error).strip().splitlines()[-1:]}"
        return _state["module"]  # type: ignore[return-value]


def unavailable() -> str | None:
    """Why ``cpu_kernel()`` is None (None while it is available or not yet tried)."""
    if os.environ.get(SWITCH, "").lower() in ("off", "0", "false", "no"):
        return f"switched off ({SWITCH}={os.environ[SWITCH]})"
    return _state.get("reason")  # type: ignore[return-value]


def entropy_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    scale: float,
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
    key_ranges: list[tuple[int, int, int, int]] | None = None,
    range_block: int = 512,
    module: ModuleType | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention output (B, Q, H, Dv) in the query's dtype, log-sum-exp and row entropy (B, H, Q) float32, one pass.

    query (B, H, Q, D), key/value (B, H_kv, K, D|Dv) on the CPU, H a multiple of H_kv; scores
    scale * <q_i, k_j> where ``mask`` (bool (B|1, 1|H, Q, K), True = may attend) allows, or key
    j <= query i if ``is_causal`` (no mask), else every key. ``key_ranges``: (first row, end row,
    first key, end key) per block of ``range_block`` query rows (``metrics.mask_key_ranges``):
    keys outside a block's range are skipped. A row with no allowed key: output 0, lse 0 (as torch's
    flash kernel), entropy 0.
    """
    module = module if module is not None else cpu_kernel()
    if module is None:
        raise RuntimeError(f"the one-pass CPU kernel is not available: {unavailable()}")
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(f"mask must be bool (True = may attend), got {mask.dtype}")

    def as_float(tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(torch.float32)
        return tensor if tensor.stride(-1) == 1 else tensor.contiguous()

    ranges = torch.empty(0, 2, dtype=torch.int64)
    if key_ranges is not None and mask is not None:
        ranges = torch.tensor([[first_key, end_key] for _, _, first_key, end_key in key_ranges], dtype=torch.int64)
        range_block = key_ranges[0][1] - key_ranges[0][0] if len(key_ranges) > 1 else max(1, query.shape[2])
    if mask is None:
        mask_arg = torch.empty(0, dtype=torch.bool)
    else:
        mask_arg = mask if mask.dim() == 4 else mask[:, None]
        mask_arg = mask_arg if mask_arg.stride(-1) == 1 else mask_arg.contiguous()
    output, lse, entropy = module.entropy_attention(  # named PROFILE_NAME in a torch.profiler profile
        as_float(query),
        as_float(key),
        as_float(value),
        mask_arg,
        bool(is_causal and mask is None),
        float(scale),
        ranges,
        int(range_block),
    )
    return output.to(query.dtype), lse, entropy


def row_sums_match_torch(module: ModuleType) -> bool:
    """Whether the kernel's per-row sums (sum, squared norm, sum of |x|) equal torch's bit for bit; once per process.

    Random rows of the widths where torch's summation changes route (below, at and above the vector width, the
    ILP and cascade steps, every remainder), with values of mixed signs and scales. False: ``hidden_statistics``
    asks torch for the two sums the relative thresholds depend on (and the sum of |x| stays within rounding).
    """
    match = _state.get("row_sums_match")
    if match is None:
        with _lock:
            generator = torch.Generator().manual_seed(0)
            match = True
            for width in (1, 3, 4, 5, 7, 8, 12, 15, 16, 17, 31, 64, 65, 100, 128, 257, 576, 960, 1023, 1536, 2051):
                rows = torch.randn(64, width, generator=generator) * torch.logspace(-3, 3, 64)[:, None]
                rows[::7] = rows[::7].abs()  # rows of one sign too: no cancellation hides a wrong order
                expected = (rows.sum(dim=-1), torch.linalg.vector_norm(rows, dim=-1).square(), rows.abs().sum(dim=-1))
                match &= all(torch.equal(a, b) for a, b in zip(module.row_sums(rows), expected, strict=True))
            _state["row_sums_match"] = match
    return bool(match)


def hidden_statistics(
    hidden: torch.Tensor,
    token_mask: torch.Tensor,
    epsilons: Sequence[float],
    *,
    pool_weights: torch.Tensor | None = None,
    module: ModuleType | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One layer's statistics (S, B) float64 in ``metrics.hidden_statistic_names(epsilons)`` order, and with
    ``pool_weights`` (``metrics.pooling_weights``) the mean-pooled vectors (B, D) float32, from hidden (B, T, D).

    hidden: float32, bfloat16 or float16, contiguous, on the CPU; token_mask (B, T): nonzero on real tokens (a
    contiguous bool mask is used as it is). Equal to ``metrics.hidden_state_statistics`` (stacked) and
    ``metrics.mean_pooled``, bit for bit. Named "compendium::hidden_statistics" in a torch.profiler profile.
    """
    module = module if module is not None else cpu_kernel()
    if module is None:
        raise RuntimeError(f"the CPU kernels are not available: {unavailable()}")
    if token_mask.dtype != torch.bool or not token_mask.is_contiguous():
        token_mask = token_mask.bool().contiguous()
    weights = torch.empty(0) if pool_weights is None else pool_weights
    stats, pooled = module.hidden_statistics(
        hidden, token_mask, weights, list(epsilons), not row_sums_match_torch(module)
    )
    return stats, None if pool_weights is None else pooled


def attention_statistics(
    rows: torch.Tensor, query_mask: torch.Tensor, n_keys: torch.Tensor, *, module: ModuleType | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer's per-head sums of row entropy (B, H) and the sum and count (B,) of row entropy / log(keys), float64.

    rows (B, H, Q) float32|float64 on the CPU; query_mask (B, Q): the real query rows; n_keys (B, 1|H, Q) float64:
    the keys each row may attend to. ``metrics.attention_entropy_per_head`` and ``metrics.normalized_row_entropy_sums``
    in one call, summed in float64 (they agree to float64 rounding).
    """
    module = module if module is not None else cpu_kernel()
    if module is None:
        raise RuntimeError(f"the CPU kernels are not available: {unavailable()}")
    if query_mask.dtype != torch.bool:
        query_mask = query_mask.bool()
    heads, sums, counts = module.attention_statistics(rows, query_mask, n_keys.to(torch.float64))
    return heads, sums, counts
