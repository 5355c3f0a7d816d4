"""FP8 attention: ``softmax(q k^T * scale) v`` with both products in float8 (e4m3).

``fp8_attention(q, k, v, scale)`` takes bf16/fp16/fp32 ``[B, H, S, D]`` tensors (any strides)
and returns ``[B, H, Sq, D]`` in ``q``'s dtype. It is what
``torch.nn.functional.scaled_dot_product_attention`` computes without a mask, dropout or
causality; dit_fx swaps it in for those calls when ``QuantizeConfig(attention="fp8")`` asks.

Quantization (``quantize_qkv``), decided for quality at no extra kernel cost:

- **K is smoothed first**: its mean over the sequence is subtracted. ``q . (k - m) = q . k - q . m``
  shifts every score of one query row by the same amount, which softmax cancels, so this is exact
  in real arithmetic; it removes the channel offsets DiT keys carry, which would otherwise spend
  the fp8 range.
- **Q and K have one scale per token** (row amax / 448), applied to each score tile inside the
  kernel (``s = (q8 k8^T) * sq[:, None] * sk[None, :]``); **V has one scale per channel** (column
  amax over the sequence), applied to the output once.
- **P** (the softmax numerator, in [0, 1]) is multiplied by 256 before its cast to e4m3, which
  keeps small probabilities out of the subnormal range; the normalizer is summed in fp32 from the
  unrounded values.
- Zero rows: every amax is clamped to ``1e-12`` first, so an all-zero row gives zeros, never NaN.

The kernel is a flash-attention forward (online softmax in base 2, one program per block of
query rows and (batch, head)), written in Triton for CUDA; V is stored with the sequence
contiguous, the layout Hopper's fp8 tensor cores read for the second product. Without Triton or
CUDA (the CPU) the op runs the dequantized inputs through fp32 attention (``reference``). It equals the kernel up to the kernel's rounding of P and its summation order.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Tuple

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
P_SCALE = 256.0  # P in [0, 1] is cast to e4m3 as P * P_SCALE
AMAX_FLOOR = 1e-12

try:  # Triton comes with torch's CUDA builds; the CPU build has none
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None


def quantize_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pv_fp8: bool = True):
    """fp8 ``q8, k8, v8`` (``[B, H, S, D]``; ``v8`` with the sequence contiguous) and fp32 scales
    ``sq [B, H, Sq]``, ``sk [B, H, Sk]``, ``sv [B, H, D]`` (module docstring). ``pv_fp8=False``:
    ``v`` stays in bf16 (``sv`` ones) and the second product runs in bf16."""
    k = k - k.mean(dim=-2, keepdim=True)
    sq = q.abs().amax(dim=-1).float().clamp_min(AMAX_FLOOR) / FP8_MAX
    sk = k.abs().amax(dim=-1).float().clamp_min(AMAX_FLOOR) / FP8_MAX
    sv = v.abs().amax(dim=-2).float().clamp_min(AMAX_FLOOR) / FP8_MAX
    q8 = (q.float() / sq.unsqueeze(-1)).to(FP8)
    k8 = (k.float() / sk.unsqueeze(-1)).to(FP8)
    if not pv_fp8:
        return q8, k8, v.to(torch.bfloat16), sq, sk, torch.ones_like(sv)
    v8 = (v.float() / sv.unsqueeze(-2)).transpose(-1, -2).contiguous().to(FP8).transpose(-1, -2)
    return q8, k8, v8, sq, sk, sv


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None,
              pv_fp8: bool = True) -> torch.Tensor:
    """The quantized attention in plain torch: quantize, dequantize, fp32 attention."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return _dequantized_attention(*quantize_qkv(q, k, v, pv_fp8), scale).to(q.dtype)


@functools.lru_cache(maxsize=None)
def _capability(index: Optional[int]) -> Tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def supported(q: torch.Tensor) -> Tuple[bool, str]:
    """Whether the Triton kernel runs for ``q`` (else the op runs ``reference``), and why not."""
    if triton is None:
        return False, "Triton is not installed"
    if not q.is_cuda:
        return False, f"the tensors are on {q.device.type}, not CUDA"
    if _capability(q.device.index) < (8, 9):
        return False, "fp8 tensor cores need CUDA capability 8.9 or newer"
    d = q.shape[-1]
    if d not in (64, 128, 256):
        return False, f"head dimension {d} is not 64, 128 or 256"
    return True, ""


if triton is not None:

    @triton.autotune(
        configs=[triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
                 for bm, bn, w, s in ((128, 128, 8, 3), (128, 64, 8, 3), (128, 128, 8, 4), (128, 64, 4, 4),
                                      (64, 128, 4, 3), (128, 256, 8, 2))],
        key=["SK", "HEAD_DIM", "PV_FP8"],
    )  # fmt: skip
    @triton.jit
    def _fp8_attention_kernel(
        Q, K, V, SQ_SCALE, SK_SCALE, SV_SCALE, O,
        sqb, sqh, sqs, sqd, skb, skh, sks, skd, svb, svh, svs, svd, sob, soh, sos, sod,
        H, SQ, SK, qk_scale,
        HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PV_FP8: tl.constexpr,
    ):  # fmt: skip
        pid_m = tl.program_id(0)
        bh = tl.program_id(1)
        b = bh // H
        h = bh % H
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        row_ok = offs_m < SQ
        q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqs + offs_d[None, :] * sqd, mask=row_ok[:, None], other=0.0)
        q_scale = tl.load(SQ_SCALE + bh * SQ + offs_m, mask=row_ok, other=0.0) * qk_scale  # base-2 softmax
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        k_base = K + b * skb + h * skh + offs_d[:, None] * skd + offs_n[None, :] * sks  # k^T tile [D, BLOCK_N]
        v_base = V + b * svb + h * svh + offs_n[:, None] * svs + offs_d[None, :] * svd  # v tile [BLOCK_N, D]
        for start in range(0, SK, BLOCK_N):
            col_ok = (start + offs_n) < SK
            kt = tl.load(k_base + start * sks, mask=col_ok[None, :], other=0.0)
            k_scale = tl.load(SK_SCALE + bh * SK + start + offs_n, mask=col_ok, other=0.0)
            s = tl.dot(q, kt) * q_scale[:, None] * k_scale[None, :]
            s = tl.where(col_ok[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.math.exp2(s - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            vt = tl.load(v_base + start * svs, mask=col_ok[:, None], other=0.0)
            if PV_FP8:
                acc = tl.dot((p * 256.0).to(tl.float8e4nv), vt, acc * alpha[:, None])  # 256.0 = P_SCALE
            else:  # v in bf16
                acc = tl.dot(p.to(tl.bfloat16), vt, acc * alpha[:, None])
            m_i = m_new
        if PV_FP8:
            v_scale = tl.load(SV_SCALE + bh * HEAD_DIM + offs_d)
            out = acc * (v_scale[None, :] / (l_i[:, None] * 256.0))
        else:
            out = acc / l_i[:, None]
        tl.store(O + b * sob + h * soh + offs_m[:, None] * sos + offs_d[None, :] * sod, out.to(O.dtype.element_ty),
                 mask=row_ok[:, None])


def _dequantized_attention(q8, k8, v8, sq, sk, sv, scale: float) -> torch.Tensor:
    qd, kd = q8.float() * sq.unsqueeze(-1), k8.float() * sk.unsqueeze(-1)
    vd = v8.float() * sv.unsqueeze(-2)
    return torch.softmax((qd @ kd.transpose(-1, -2)) * scale, dim=-1) @ vd


def _kernel(q8, k8, v8, sq, sk, sv, scale: float, out: torch.Tensor) -> torch.Tensor:
    B, H, Sq, D = q8.shape
    grid = lambda meta: (triton.cdiv(Sq, meta["BLOCK_M"]), B * H)  # noqa: E731
    _fp8_attention_kernel[grid](
        q8, k8, v8, sq.contiguous(), sk.contiguous(), sv.contiguous(), out, *q8.stride(), *k8.stride(), *v8.stride(),
        *out.stride(), H, Sq, k8.shape[-2], scale * 1.4426950408889634, HEAD_DIM=D, PV_FP8=v8.dtype == FP8)  # fmt: skip
    return out


@torch.library.custom_op("dit_fx::fp8_attention_quantized", mutates_args=())
def fp8_attention_quantized(q8: torch.Tensor, k8: torch.Tensor, v8: torch.Tensor, sq: torch.Tensor, sk: torch.Tensor,
                            sv: torch.Tensor, scale: float, out_dtype: torch.dtype) -> torch.Tensor:
    """Attention on ``quantize_qkv``'s outputs: the Triton kernel where ``supported``, else the
    dequantized inputs through fp32 attention."""
    if supported(q8)[0]:
        out = torch.empty(q8.shape[:-1] + (v8.shape[-1],), dtype=out_dtype, device=q8.device)
        return _kernel(q8, k8, v8, sq, sk, sv, scale, out)
    return _dequantized_attention(q8, k8, v8, sq, sk, sv, scale).to(out_dtype)


@fp8_attention_quantized.register_fake
def _(q8, k8, v8, sq, sk, sv, scale, out_dtype):
    return q8.new_empty(q8.shape[:-1] + (v8.shape[-1],), dtype=out_dtype)


def fp8_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None,
                  pv_fp8: bool = True) -> torch.Tensor:
    """``scaled_dot_product_attention(q, k, v, scale=scale)`` in fp8 (module docstring). The
    quantization is plain torch ops, so a compiled graph fuses it into the ops before it; the
    attention itself is the op ``dit_fx::fp8_attention_quantized``."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return fp8_attention_quantized(*quantize_qkv(q, k, v, pv_fp8), scale, q.dtype)
