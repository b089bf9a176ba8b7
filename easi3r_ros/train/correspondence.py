"""Ground-truth token correspondences and the decoder's branch-1 cross-attention logits.

Easi3R reads motion out of the decoder's cross-attention, so whether that attention finds the view-2 token
showing the same surface as a view-1 token is measured (diagnostics) and may be supervised (an auxiliary
cross-entropy on the pre-softmax logits). The logits are recomputed from the inputs the ``CrossAttention``
modules receive (captured by forward hooks, with the modules' own projq/projk and RoPE), so the model code
is untouched and the fused attention kernel keeps running inside the network.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..model.blocks import _split_heads


def token_matches(batch: Dict[str, torch.Tensor], patch: int = 16,
                  depth_tol: float = 0.05) -> Tuple[torch.Tensor, torch.Tensor]:
    """For each view-1 token, the index of the view-2 token its centre pixel projects to.

    The centre pixel (row ``patch//2``, column ``patch//2`` of the patch) is taken from ``pts1`` (camera-1
    frame), moved to camera 2 with the ground-truth poses (camera-to-world), projected with ``K`` (integer
    pixel coordinates at pixel centres) and rounded to a pixel. A match is *valid* when the centre pixel hit a
    surface, lands in front of camera 2 inside the image, on a valid view-2 pixel whose depth agrees within
    ``depth_tol`` (relative): i.e. the point is visible, not occluded. Returns ``(target (B, N) long,
    valid (B, N) bool)``, N = (H/patch)*(W/patch) in row-major token order; targets of invalid matches are 0.
    """
    pts1, valid1, depth2 = batch["pts1"], batch["valid1"], batch["depth2"]
    b, h, w, _ = pts1.shape
    gh, gw = h // patch, w // patch
    rows = torch.arange(gh, device=pts1.device) * patch + patch // 2
    cols = torch.arange(gw, device=pts1.device) * patch + patch // 2
    centre = pts1[:, rows][:, :, cols].reshape(b, -1, 3).double()             # (B, N, 3) camera 1
    ok = valid1[:, rows][:, :, cols].reshape(b, -1)
    cam1_to_cam2 = torch.linalg.solve(batch["cam2_to_world"].double(), batch["cam1_to_world"].double())
    xyz = centre @ cam1_to_cam2[:, :3, :3].transpose(1, 2) + cam1_to_cam2[:, None, :3, 3]
    z = xyz[..., 2]
    uvw = xyz @ batch["K"].double().transpose(1, 2)
    z_safe = torch.where(z > 1e-6, z, torch.ones_like(z))
    u = torch.round(uvw[..., 0] / z_safe)
    v = torch.round(uvw[..., 1] / z_safe)
    ok = ok & (z > 1e-6) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    ui = u.clamp(0, w - 1).long()
    vi = v.clamp(0, h - 1).long()
    bi = torch.arange(b, device=pts1.device)[:, None].expand_as(ui)
    seen = depth2[bi, vi, ui].double()
    ok = ok & batch["valid2"][bi, vi, ui] & ((seen - z).abs() <= depth_tol * z.abs())
    target = (vi // patch) * gw + ui // patch
    return torch.where(ok, target, torch.zeros_like(target)), ok


class CrossAttentionCapture:
    """Context manager: records the inputs of branch-1 decoder cross-attentions during forwards.

    ``layers`` selects decoder layers (default all). After a forward, :meth:`logits` gives per layer the
    pre-softmax logits ``(B, heads, Nq, Nk)``, recomputed exactly as ``CrossAttention.forward`` forms them
    (projq/projk, heads split, RoPE with the query/key positions, scale D^-1/2). Gradients flow through them.
    """

    def __init__(self, net: nn.Module, layers: Optional[Sequence[int]] = None):
        blocks = net.dec_blocks
        self.layers = list(range(len(blocks))) if layers is None else [int(k) for k in layers]
        bad = [k for k in self.layers if not 0 <= k < len(blocks)]
        if bad:
            raise ValueError(f"decoder layer(s) {bad} out of range 0..{len(blocks) - 1}")
        self.modules = [blocks[k].cross_attn for k in self.layers]
        self.inputs: List[Optional[tuple]] = [None] * len(self.layers)
        self._handles = []

    def __enter__(self) -> "CrossAttentionCapture":
        for slot, module in enumerate(self.modules):
            def hook(mod, args, kwargs, output, slot=slot):
                query, key, _value, qpos, kpos = args[:5]
                self.inputs[slot] = (query, key, qpos, kpos)
            self._handles.append(module.register_forward_hook(hook, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def clear(self) -> None:
        self.inputs = [None] * len(self.layers)

    def logits(self) -> List[torch.Tensor]:
        out = []
        for module, captured in zip(self.modules, self.inputs):
            if captured is None:
                raise RuntimeError("no forward ran inside the capture")
            query, key, qpos, kpos = captured
            q = module.rope(_split_heads(module.projq(query), module.num_heads), qpos)
            k = module.rope(_split_heads(module.projk(key), module.num_heads), kpos)
            out.append((q @ k.transpose(-2, -1)) * q.size(-1) ** -0.5)
        return out


def attention_match_loss(logits: Sequence[torch.Tensor], target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy, over layers, heads and valid view-1 tokens, of the logits toward the true view-2 token.

    ``logits``: per layer (B, heads, N, N); ``target``/``valid``: (B, N). Zero when no token has a valid match.
    """
    total = logits[0].new_zeros((), dtype=torch.float32)
    weight = valid.float()
    count = weight.sum()
    for layer in logits:
        b, heads, n, m = layer.shape
        ce = F.cross_entropy(layer.float().reshape(b * heads * n, m),
                             target[:, None, :].expand(b, heads, n).reshape(-1), reduction="none")
        total = total + (ce.reshape(b, heads, n) * weight[:, None, :]).sum() / (count * heads).clamp(min=1)
    return total / len(logits)
