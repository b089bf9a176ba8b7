"""The DUSt3R network (AsymmetricCroCo3DStereo): a shared ViT encoder, a two-branch decoder, two heads.

Frames are encoded once (:meth:`Dust3rNetwork.encode`); any ordered pair is then decoded from the cached
tokens (:meth:`Dust3rNetwork.decode`), optionally returning the query-mean cross-attention logits of
both branches and applying Easi3R's pass-2 re-weighting.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from .blocks import DecoderBlock, EncoderBlock, Reweighting
from .config import ModelConfig, check_keep_fp32
from .heads import DPTHead, LinearHead, activate_outputs
from .rope import RoPE2D, grid_positions


@dataclass
class PairPrediction:
    """Outputs of ordered pairs (view 1 = i, view 2 = j), batched over pairs.

    ``pts2`` holds view 2's pixels in camera-1 coordinates. ``attn1`` is branch 1's query-mean
    cross-attention logit map on view 2's tokens, ``attn2`` branch 2's on view 1's tokens; channel =
    layer * heads + head.
    """

    pts1: Optional[torch.Tensor]             # (B, H, W, 3)
    conf1: Optional[torch.Tensor]            # (B, H, W)
    pts2: Optional[torch.Tensor]             # (B, H, W, 3)
    conf2: Optional[torch.Tensor]            # (B, H, W)
    attn1: Optional[torch.Tensor] = None     # (B, h, w, A)
    attn2: Optional[torch.Tensor] = None     # (B, h, w, A)


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _, _, h, w = images.shape
        if h % self.patch or w % self.patch:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {self.patch}")
        return self.proj(images).flatten(2).transpose(1, 2)


class Dust3rNetwork(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        rope = RoPE2D(cfg.rope_base)
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.enc_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dec_embed_dim))  # training-only, kept for the format
        self.enc_blocks = nn.ModuleList(
            EncoderBlock(cfg.enc_embed_dim, cfg.enc_num_heads, cfg.mlp_ratio, rope) for _ in range(cfg.enc_depth))
        self.enc_norm = nn.LayerNorm(cfg.enc_embed_dim, eps=1e-6)
        self.decoder_embed = nn.Linear(cfg.enc_embed_dim, cfg.dec_embed_dim)

        def branch():
            return nn.ModuleList(
                DecoderBlock(cfg.dec_embed_dim, cfg.dec_num_heads, cfg.mlp_ratio, rope, cfg.norm_im2_in_dec)
                for _ in range(cfg.dec_depth))

        self.dec_blocks = branch()
        self.dec_blocks2 = branch()
        self.dec_norm = nn.LayerNorm(cfg.dec_embed_dim, eps=1e-6)
        if cfg.head_type == "linear":
            make_head = lambda: LinearHead(cfg.dec_embed_dim, cfg.patch_size)  # noqa: E731
        else:
            make_head = lambda: DPTHead(cfg.enc_embed_dim, cfg.dec_embed_dim, cfg.dec_depth, cfg.patch_size)  # noqa: E731
        self.downstream_head1 = make_head()
        self.downstream_head2 = make_head()

    @property
    def device(self) -> torch.device:
        return self.enc_norm.weight.device

    def token_grid(self, hw: Tuple[int, int]) -> Tuple[int, int]:
        return hw[0] // self.cfg.patch_size, hw[1] // self.cfg.patch_size

    def encode(self, images: torch.Tensor, naive: bool = False) -> torch.Tensor:
        """(B, 3, H, W) images in [-1, 1] -> (B, N, enc_dim) tokens after the final encoder norm."""
        x = self.patch_embed(images)
        pos = grid_positions(*self.token_grid(images.shape[-2:]), device=x.device)
        for block in self.enc_blocks:
            x = block(x, pos, naive=naive)
        return self.enc_norm(x)

    def decode(self, enc1: torch.Tensor, enc2: torch.Tensor, image_hw: Tuple[int, int], *,
               attention_stats: bool = False, reweight: Optional[Reweighting] = None,
               heads: bool = True, naive: bool = False, keep_fp32: str = "nothing") -> PairPrediction:
        """Decode ordered pairs from encoder tokens (B, N, enc_dim) of views 1 and 2 (same image size).

        ``heads=False`` stops after the decoder (Easi3R's pass 1 needs only the attention statistics);
        the point and confidence fields are then None. ``keep_fp32`` (one of ``config.KEEP_FP32``): what still
        runs in fp32 under a bf16/fp16 autocast. ``"cross-attention"``: the cross-attention layers, whose logits
        are Easi3R's motion signal (its per-pixel statistics over pairs are fine differences that bf16 rounding
        swamps), while the self-attention and MLPs, most of the decoder's work, stay reduced; ``"decoder"``: the
        whole decoder, so that only the prediction heads are reduced and the attention statistics are fp32's;
        ``"nothing"``: all reduced (measured in ``benchmarks/precision.py``).
        """
        check_keep_fp32(keep_fp32)
        decoder_fp32 = keep_fp32 == "decoder" and torch.is_autocast_enabled(enc1.device.type)
        with torch.autocast(enc1.device.type, enabled=False) if decoder_fp32 else contextlib.nullcontext():
            f1, f2, outs1, outs2, stats1, stats2 = self._decoder(
                enc1, enc2, image_hw, reweight=reweight, attention_stats=attention_stats, naive=naive,
                full_precision_cross=keep_fp32 == "cross-attention")
        h, w = self.token_grid(image_hw)
        pred = PairPrediction(None, None, None, None)
        if heads:
            outs1[-1], outs2[-1] = self.dec_norm(f1), self.dec_norm(f2)
            pred.pts1, pred.conf1 = activate_outputs(self.downstream_head1(outs1, image_hw), *self._modes)
            pred.pts2, pred.conf2 = activate_outputs(self.downstream_head2(outs2, image_hw), *self._modes)
        if attention_stats:
            pred.attn1 = _stack_attention(stats1, h, w)
            pred.attn2 = _stack_attention(stats2, h, w)
        return pred

    def _decoder(self, enc1, enc2, image_hw, *, reweight, attention_stats, naive, full_precision_cross):
        """The two decoder branches: final features, every block's outputs (after the encoder's) and the
        per-block attention statistics of each branch."""
        h, w = self.token_grid(image_hw)
        pos = grid_positions(h, w, device=enc1.device)
        f1, f2 = self.decoder_embed(enc1), self.decoder_embed(enc2)
        outs1, outs2 = [enc1], [enc2]
        stats1, stats2 = [], []
        for block1, block2 in zip(self.dec_blocks, self.dec_blocks2):
            new1, s1 = block1(f1, f2, pos, pos, reweight=reweight, logit_mean=attention_stats, naive=naive,
                              full_precision_cross=full_precision_cross)
            new2, s2 = block2(f2, f1, pos, pos, logit_mean=attention_stats, naive=naive,
                              full_precision_cross=full_precision_cross)
            f1, f2 = new1, new2
            outs1.append(f1)
            outs2.append(f2)
            stats1.append(s1)
            stats2.append(s2)
        return f1, f2, outs1, outs2, stats1, stats2

    @property
    def _modes(self):
        return self.cfg.depth_mode, self.cfg.conf_mode

    def forward(self, img1: torch.Tensor, img2: torch.Tensor, **kwargs) -> PairPrediction:
        enc = self.encode(torch.cat((img1, img2)))
        return self.decode(enc[: len(img1)], enc[len(img1):], img1.shape[-2:], **kwargs)


def _stack_attention(per_layer, h: int, w: int) -> torch.Tensor:
    """[(B, heads, N)] * layers -> (B, h, w, layers * heads), channel = layer * heads + head."""
    stacked = torch.stack(per_layer, dim=1)            # (B, L, heads, N)
    b, layers, heads, n = stacked.shape
    return stacked.reshape(b, layers * heads, n).transpose(1, 2).reshape(b, h, w, layers * heads)
