"""Prediction heads: raw (x, y, z, c) per pixel, then DUSt3R's output activations.

Module and parameter names follow the official state dict (``downstream_head{1,2}.proj`` for the
linear head, ``downstream_head{1,2}.dpt.*`` for DPT), so checkpoints load without renaming.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def activate_outputs(raw: torch.Tensor, depth_mode, conf_mode) -> Tuple[torch.Tensor, torch.Tensor]:
    """raw (B, 4, H, W) -> points (B, H, W, 3), confidence (B, H, W)."""
    fmap = raw.permute(0, 2, 3, 1)
    xyz, c = fmap[..., :3], fmap[..., 3]
    mode = depth_mode[0]
    if mode == "linear":
        pts = xyz
    else:
        x, y, z = xyz.unbind(-1)   # torch's norm over this strided 3-vector axis is ~90x slower on the CPU
        d = (x * x + y * y + z * z).sqrt().unsqueeze(-1)
        direction = xyz / d.clip(min=1e-8)
        pts = direction * (torch.expm1(d) if mode == "exp" else d.square())
    cmode, vmin, vmax = conf_mode
    if cmode == "exp":
        conf = vmin + c.exp().clip(max=vmax - vmin)
    else:  # sigmoid
        conf = (vmax - vmin) * torch.sigmoid(c) + vmin
    return pts, conf


class LinearHead(nn.Module):
    """Linear projection of the last decoder tokens to 16x16 patches of (x, y, z, c)."""

    def __init__(self, dec_dim: int, patch: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Linear(dec_dim, 4 * patch * patch)

    def forward(self, tokens: Sequence[torch.Tensor], hw: Tuple[int, int]) -> torch.Tensor:
        h, w = hw
        x = self.proj(tokens[-1])
        b = x.size(0)
        x = x.transpose(-1, -2).reshape(b, -1, h // self.patch, w // self.patch)
        return F.pixel_shuffle(x, self.patch)


class _Upsample2x(nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x, skip=None):
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class _Scratch(nn.Module):
    def __init__(self, layer_dims: Sequence[int], features: int):
        super().__init__()
        for k, dim in enumerate(layer_dims, start=1):
            setattr(self, f"layer{k}_rn", nn.Conv2d(dim, features, 3, padding=1, bias=False))
        # The official module also lists the same convs as `layer_rn.{k-1}` (shared tensors, both in the state dict).
        self.layer_rn = nn.ModuleList([getattr(self, f"layer{k}_rn") for k in range(1, len(layer_dims) + 1)])
        for k in range(1, 5):
            setattr(self, f"refinenet{k}", FusionBlock(features))


class DPT(nn.Module):
    """Dense prediction transformer head over four hooked token layers."""

    LAYER_DIMS = (96, 192, 384, 768)
    FEATURES = 256

    def __init__(self, token_dims: Sequence[int], hooks: Sequence[int], patch: int, out_channels: int = 4):
        super().__init__()
        self.hooks = list(hooks)
        self.patch = patch
        d = self.LAYER_DIMS
        self.scratch = _Scratch(d, self.FEATURES)
        self.act_postprocess = nn.ModuleList([
            nn.Sequential(nn.Conv2d(token_dims[0], d[0], 1), nn.ConvTranspose2d(d[0], d[0], 4, stride=4)),
            nn.Sequential(nn.Conv2d(token_dims[1], d[1], 1), nn.ConvTranspose2d(d[1], d[1], 2, stride=2)),
            nn.Sequential(nn.Conv2d(token_dims[2], d[2], 1)),
            nn.Sequential(nn.Conv2d(token_dims[3], d[3], 1), nn.Conv2d(d[3], d[3], 3, stride=2, padding=1)),
        ])
        half = self.FEATURES // 2
        self.head = nn.Sequential(
            nn.Conv2d(self.FEATURES, half, 3, padding=1),
            _Upsample2x(),
            nn.Conv2d(half, half, 3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(half, out_channels, 1),
        )

    def forward(self, tokens: Sequence[torch.Tensor], hw: Tuple[int, int]) -> torch.Tensor:
        h, w = hw[0] // self.patch, hw[1] // self.patch
        layers: List[torch.Tensor] = []
        for idx, hook in enumerate(self.hooks):
            t = tokens[hook]
            t = t.transpose(-1, -2).reshape(t.size(0), t.size(-1), h, w)
            layers.append(self.scratch.layer_rn[idx](self.act_postprocess[idx](t)))
        s = self.scratch
        path = s.refinenet4(layers[3])
        for k, refine in ((2, s.refinenet3), (1, s.refinenet2), (0, s.refinenet1)):
            # odd token grids: the upsampled coarser path is one row/column larger than the finer layer
            path = refine(path[:, :, :layers[k].size(2), :layers[k].size(3)], layers[k])
        return self.head(path)


class DPTHead(nn.Module):
    """Wrapper so parameter names read ``downstream_headN.dpt.*`` as in the official checkpoints."""

    def __init__(self, enc_dim: int, dec_dim: int, dec_depth: int, patch: int):
        super().__init__()
        hooks = [0, dec_depth * 2 // 4, dec_depth * 3 // 4, dec_depth]
        self.dpt = DPT([enc_dim, dec_dim, dec_dim, dec_dim], hooks, patch)

    def forward(self, tokens, hw):
        return self.dpt(tokens, hw)
