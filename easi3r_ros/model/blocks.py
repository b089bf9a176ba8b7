"""Transformer blocks of the CroCo/DUSt3R encoder and decoder.

One attention primitive, :func:`attend`, serves every attention in the network. It always runs the
fused kernel (``F.scaled_dot_product_attention``) for the output, and on request also returns
Easi3R's statistic, the query-mean of the pre-softmax logits, through the identity
``mean_q(q_q . k_p) = (mean_q q_q) . k_p``: O(N*D) per head, no N x N tensor.

Pass-2 re-weighting zeroes the attention probabilities of static queries on dynamic keys without
renormalising, which equals attending with the dynamic keys' values zeroed while the softmax still
runs over all keys: static queries read ``SDPA(q, k, v * s)``, dynamic queries ``SDPA(q, k, v)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .rope import RoPE2D


@dataclass
class Reweighting:
    """Token masks of one decoder pair for Easi3R's pass 2 (True = static)."""

    query_static: torch.Tensor   # (B, Nq) bool, view-1 tokens
    key_static: torch.Tensor     # (B, Nk) bool, view-2 tokens


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, reweight: Optional[Reweighting] = None,
           logit_mean: bool = False, naive: bool = False):
    """Attention of (B, heads, N, D) tensors after RoPE.

    Returns ``(out (B, heads, Nq, D), mean_logits (B, heads, Nk) or None)``. ``naive`` materialises the
    full logits (the reference's way; kept for benchmarks and cross-checks).
    """
    scale = q.size(-1) ** -0.5
    if naive:
        logits = (q @ k.transpose(-2, -1)) * scale
        stat = logits.mean(dim=-2) if logit_mean else None
        probs = logits.softmax(dim=-1)
        if reweight is None:
            return probs @ v, stat
        keep = (~reweight.query_static)[:, None, :, None] | reweight.key_static[:, None, None, :]
        return (probs * keep.to(probs.dtype)) @ v, stat

    stat = None
    if logit_mean:
        q_mean = q.float().mean(dim=-2, keepdim=True)
        stat = (q_mean @ k.float().transpose(-2, -1)).squeeze(-2) * scale
    if reweight is None:
        return F.scaled_dot_product_attention(q, k, v), stat
    # One kernel call for both value sets: the softmax is shared, values are [v | v * s].
    keep = reweight.key_static[:, None, :, None].to(v.dtype)
    both = F.scaled_dot_product_attention(q, k, torch.cat((v, v * keep), dim=-1))
    out_all, out_static = both.split(v.size(-1), dim=-1)
    out = torch.where(reweight.query_static[:, None, :, None], out_static, out_all)
    return out, stat


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, rope: RoPE2D):
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: torch.Tensor, pos: torch.Tensor, naive: bool = False) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        out, _ = attend(self.rope(q, pos), self.rope(k, pos), v, naive=naive)
        return self.proj(_merge_heads(out))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, rope: RoPE2D):
        super().__init__()
        self.num_heads = heads
        self.projq = nn.Linear(dim, dim)
        self.projk = nn.Linear(dim, dim)
        self.projv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, query, key, value, qpos, kpos, *, reweight=None, logit_mean=False, naive=False,
                full_precision=False):
        """``full_precision``: under autocast, run this attention in fp32 anyway (see ``Dust3rNetwork.decode``)."""
        if full_precision and torch.is_autocast_enabled(query.device.type):
            with torch.autocast(query.device.type, enabled=False):
                return self.forward(query.float(), key.float(), value.float(), qpos, kpos, reweight=reweight,
                                    logit_mean=logit_mean, naive=naive)
        q = self.rope(_split_heads(self.projq(query), self.num_heads), qpos)
        k = self.rope(_split_heads(self.projk(key), self.num_heads), kpos)
        v = _split_heads(self.projv(value), self.num_heads)
        out, stat = attend(q, k, v, reweight=reweight, logit_mean=logit_mean, naive=naive)
        return self.proj(_merge_heads(out)), stat


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, rope: RoPE2D):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SelfAttention(dim, heads, rope)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, pos, naive: bool = False):
        x = x + self.attn(self.norm1(x), pos, naive=naive)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """x += SelfAttn(LN1 x); x += CrossAttn(LN2 x, LN_y y); x += MLP(LN3 x)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, rope: RoPE2D, norm_mem: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SelfAttention(dim, heads, rope)
        self.cross_attn = CrossAttention(dim, heads, rope)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = nn.LayerNorm(dim, eps=1e-6) if norm_mem else nn.Identity()

    def forward(self, x, y, xpos, ypos, *, reweight=None, logit_mean=False, naive=False, full_precision_cross=False):
        x = x + self.attn(self.norm1(x), xpos, naive=naive)
        y_ = self.norm_y(y)
        cross, stat = self.cross_attn(self.norm2(x), y_, y_, xpos, ypos, reweight=reweight, logit_mean=logit_mean,
                                      naive=naive, full_precision=full_precision_cross)
        x = x + cross
        return x + self.mlp(self.norm3(x)), stat
