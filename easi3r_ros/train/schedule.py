"""Optimiser and learning-rate schedule: AdamW, linear warm-up, cosine decay to a floor."""
from __future__ import annotations

import math
from typing import List

import torch
from torch import nn


class WarmupCosine:
    """LR multiplier at a step: linear ramp over ``warmup`` steps, then cosine from 1 to ``floor`` at ``total``.

    A callable object (not a closure) so that ``LambdaLR.state_dict`` saves and restores it.
    """

    def __init__(self, total: int, warmup: int, floor: float = 1e-2):
        self.total, self.warmup, self.floor = int(total), int(warmup), float(floor)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(net: nn.Module, weight_decay: float) -> List[dict]:
    """Weight decay on matrices and kernels only: biases, norms and the mask token are not decayed (as ViTs do)."""
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.endswith("mask_token") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimiser(net: nn.Module, lr: float, total: int, warmup: int, *, weight_decay: float = 0.05,
                   betas=(0.9, 0.95), floor: float = 1e-2):
    """(AdamW, LambdaLR) with DUSt3R-style settings; call ``scheduler.step()`` after every optimiser step."""
    fused = next(net.parameters()).is_cuda  # the fused kernel exists for CUDA tensors only
    opt = torch.optim.AdamW(parameter_groups(net, weight_decay), lr=lr, betas=tuple(betas), fused=fused or None)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(total, warmup, floor))
    return opt, sched

