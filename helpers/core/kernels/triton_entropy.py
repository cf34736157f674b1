"""The GPU counterpart of the one-pass kernel, in Triton: attention output, log-sum-exp and row entropy.

The same accumulators as ``entropy_attention.cpp`` (see its header): per query row the running
max m, the denominator l = sum_j exp(s_ij - m) and a = sum_j exp(s_ij - m) (s_ij - m), rescaled
when m moves by delta as l' = alpha l, a' = alpha (a - delta l) with alpha = exp(-delta); at the
end H_i = log l_i - a_i / l_i. One program per block of query rows and (batch, head); grouped-query
heads read key head h // (H / H_kv); masks: causal, or a bool (B|1, H|1, Q, K) mask.

Tested on the CPU with Triton's interpreter (TRITON_INTERPRET=1, tests/unit/test_triton_entropy.py);
it is not used by ``measure`` yet and has not been timed on a GPU.
"""

from __future__ import annotations

from typing import Any

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # triton is optional: only the GPU route and its interpreter test need it
    triton = None
    tl = None

_KERNELS: dict[str, Any] = {}


def available() -> bool:
    """Whether triton is installed."""
    return triton is not None


def _kernel_source(
    q_ptr,
    k_ptr,
    v_ptr,
    mask_ptr,
    out_ptr,
    lse_ptr,
    ent_ptr,
    sqb,
    sqh,
    sqm,
    skb,
    skh,
    skn,
    svb,
    svh,
    svn,
    smb,
    smh,
    smm,
    sob,
    som,
    soh,
    H,
    GROUPS,
    Q_LEN,
    K_LEN,
    D,
    DV,
    scale,
    HAS_MASK: tl.constexpr,
    IS_CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    hk = h // GROUPS
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_n0 = tl.arange(0, BLOCK_N)
    row_ok = offs_m < Q_LEN
    q = tl.load(
        q_ptr + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :],
        mask=row_ok[:, None] & (offs_d[None, :] < D),
        other=0.0,
    ).to(tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    a_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    end_n = K_LEN
    if IS_CAUSAL:
        end_n = tl.minimum(K_LEN, (start_m + 1) * BLOCK_M)
    for start_n in range(0, end_n, BLOCK_N):
        offs_n = start_n + offs_n0
        col_ok = offs_n < K_LEN
        k = tl.load(
            k_ptr + b * skb + hk * skh + offs_n[:, None] * skn + offs_d[None, :],
            mask=col_ok[:, None] & (offs_d[None, :] < D),
            other=0.0,
        ).to(tl.float32)
        v = tl.load(
            v_ptr + b * svb + hk * svh + offs_n[:, None] * svn + offs_dv[None, :],
            mask=col_ok[:, None] & (offs_dv[None, :] < DV),
            other=0.0,
        ).to(tl.float32)
        s = tl.dot(q, tl.trans(k)) * scale
        allowed = row_ok[:, None] & col_ok[None, :]
        if IS_CAUSAL:
            allowed = allowed & (offs_n[None, :] <= offs_m[:, None])
        if HAS_MASK:
            bits = tl.load(
                mask_ptr + b * smb + h * smh + offs_m[:, None] * smm + offs_n[None, :], mask=allowed, other=0
            )
            allowed = allowed & (bits != 0)
        s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing allowed yet
        diff = tl.where(allowed, s - m_safe[:, None], 0.0)  # masked: 0, never -inf * 0
        p = tl.where(allowed, tl.exp(diff), 0.0)
        weighted = tl.sum(p * diff, 1)
        alpha = tl.where(l_i > 0, tl.exp(m_i - m_safe), 0.0)
        shift = tl.where(l_i > 0, m_safe - m_i, 0.0)
        a_i = alpha * (a_i - shift * l_i) + weighted
        l_i = alpha * l_i + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p, v)
        m_i = m_new
    has_keys = l_i > 0
    l_safe = tl.where(has_keys, l_i, 1.0)
    log_l = tl.log(l_safe)
    out = tl.where(has_keys[:, None], acc / l_safe[:, None], 0.0)
    lse = tl.where(has_keys, m_i + log_l, 0.0)
    entropy = tl.where(has_keys, log_l - a_i / l_safe, 0.0)
    tl.store(
        out_ptr + b * sob + offs_m[:, None] * som + h * soh + offs_dv[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=row_ok[:, None] & (offs_dv[None, :] < DV),
    )
    tl.store(lse_ptr + bh * Q_LEN + offs_m, lse, mask=row_ok)
    tl.store(ent_ptr + bh * Q_LEN + offs_m, entropy, mask=row_ok)


def _compiled() -> Any:
    """The jitted kernel: compiled for the GPU, or interpreted with numpy when TRITON_INTERPRET=1 was set
    before triton was imported (triton's own functions such as ``tl.zeros`` are made at that import)."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    if "kernel" not in _KERNELS:
        _KERNELS["kernel"] = triton.jit(_kernel_source)
    return _KERNELS["kernel"]


def entropy_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    scale: float,
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
    block_m: int = 64,
    block_n: int = 64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Output (B, Q, H, Dv) in the query's dtype, log-sum-exp and row entropy (B, H, Q) float32, one pass.

    query (B, H, Q, D), key/value (B, H_kv, K, D|Dv) (CUDA, or CPU under TRITON_INTERPRET=1); mask bool
    (B|1, H|1, Q, K), True = may attend, or ``is_causal`` (key j <= query i). float32 accumulation.
    """
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(f"mask must be bool (True = may attend), got {mask.dtype}")
    batch, heads, q_len, dim = query.shape
    kv_heads, k_len, dim_v = key.shape[1], key.shape[2], value.shape[3]
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads are not a multiple of {kv_heads} key heads")
    query, key, value = (t if t.stride(-1) == 1 else t.contiguous() for t in (query, key, value))
    output = torch.empty(batch, q_len, heads, dim_v, dtype=query.dtype, device=query.device)
    lse = torch.empty(batch, heads, q_len, dtype=torch.float32, device=query.device)
    entropy = torch.empty_like(lse)
    if mask is not None:
        mask = (mask if mask.dim() == 4 else mask[:, None]).to(torch.int8)
        mask_strides = [mask.stride(0) if mask.shape[0] > 1 else 0, mask.stride(1) if mask.shape[1] > 1 else 0]
        mask_arg, mask_strides = mask, [*mask_strides, mask.stride(2)]
    else:
        mask_arg, mask_strides = lse, [0, 0, 0]  # never read
    grid = (triton.cdiv(q_len, block_m), batch * heads)
    _compiled()[grid](
        query, key, value, mask_arg, output, lse, entropy,
        query.stride(0), query.stride(1), query.stride(2),
        key.stride(0), key.stride(1), key.stride(2),
        value.stride(0), value.stride(1), value.stride(2),
        *mask_strides,
        output.stride(0), output.stride(1), output.stride(2),
        heads, heads // kv_heads, q_len, k_len, dim, dim_v, float(scale),
        HAS_MASK=mask is not None, IS_CAUSAL=bool(is_causal and mask is None),
        BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_D=triton.next_power_of_2(max(dim, 16)), BLOCK_DV=triton.next_power_of_2(max(dim_v, 16)),
    )  # fmt: skip
    return output, lse, entropy
