"""2D rotary position embedding (RoPE2D) as DUSt3R uses it.

A head of size D is split in two halves: the first is rotated with the token's row (y), the second
with its column (x). Inside a half of size 2m, dim k pairs with dim k+m ("rotate half") at angle
pos * base^(-2k / (D/2)).
"""
from __future__ import annotations

import torch
from torch import nn


def grid_positions(h: int, w: int, device=None) -> torch.Tensor:
    """(h*w, 2) integer (y, x) positions of a token grid in row-major order."""
    ys = torch.arange(h, device=device)
    xs = torch.arange(w, device=device)
    return torch.cartesian_prod(ys, xs)


class RoPE2D(nn.Module):
    def __init__(self, base: float = 100.0):
        super().__init__()
        self.base = float(base)
        self._cache = {}

    def _cos_sin(self, half_dim: int, n_pos: int, device, dtype):
        key = (half_dim, n_pos, device, dtype)
        if key not in self._cache:
            # float32 tables computed the way the reference does, then cast (bit-compatible in fp32)
            inv_freq = 1.0 / (self.base ** (torch.arange(0, half_dim, 2, device=device).float() / half_dim))
            t = torch.arange(n_pos, device=device, dtype=inv_freq.dtype)
            freqs = torch.einsum("i,j->ij", t, inv_freq)
            freqs = torch.cat((freqs, freqs), dim=-1)
            # angles and their cos/sin in fp32, then cast: a bf16 angle of 30 rad is off by up to 0.06 rad
            self._cache[key] = (freqs.cos().to(dtype), freqs.sin().to(dtype))
        return self._cache[key]

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens (B, heads, N, D), positions (N, 2) or (B, N, 2) integer (y, x)."""
        half = tokens.size(-1) // 2
        cos, sin = self._cos_sin(half, int(positions.max()) + 1, tokens.device, tokens.dtype)
        out = []
        for axis, part in enumerate(tokens.chunk(2, dim=-1)):
            pos = positions[..., axis]
            c = cos[pos]
            s = sin[pos]
            if pos.ndim == 2:  # per-batch positions -> broadcast over heads
                c, s = c[:, None], s[:, None]
            out.append(part * c + self._rotate_half(part) * s)
        return torch.cat(out, dim=-1)
