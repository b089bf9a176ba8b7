"""Small geometric helpers shared by the global aligner (spec §9). Pure torch, batched, no ROS.

Conventions: poses are camera-to-world 4x4 matrices; camera optical frame (x right, y down,
z forward); pixel (u, v) at integer coordinates u = 0..W-1, v = 0..H-1 (no +0.5 offset);
principal point (W/2, H/2).
"""
from __future__ import annotations

import functools

import numpy as np
import roma
import torch


def as_tensor(x, device=None, dtype=torch.float32) -> torch.Tensor:
    """numpy / torch / sequence -> tensor on `device` with `dtype` (no copy when already there)."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device if device is not None else x.device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def signed_log1p(x: torch.Tensor) -> torch.Tensor:
    """sign(x)·log(1 + |x|): the storage transform of translations."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def signed_expm1(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`signed_log1p`: sign(x)·(exp(|x|) − 1)."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


# R(q) = Σ_k (qᵀ A_k q) e_k for a unit quaternion q = (x, y, z, w): the nine symmetric 4x4 forms of the rotation
# matrix (row-major; the same entries as roma.unitquat_to_rotmat). As quadratic forms the gradient is 2·A_k·q.
_ROT_FORMS = np.zeros((9, 4, 4))
for _k, _terms in enumerate((
        ((0, 0, 1), (1, 1, -1), (2, 2, -1), (3, 3, 1)), ((0, 1, 1), (2, 3, -1)), ((0, 2, 1), (1, 3, 1)),
        ((0, 1, 1), (2, 3, 1)), ((0, 0, -1), (1, 1, 1), (2, 2, -1), (3, 3, 1)), ((1, 2, 1), (0, 3, -1)),
        ((0, 2, 1), (1, 3, -1)), ((1, 2, 1), (0, 3, 1)), ((0, 0, -1), (1, 1, -1), (2, 2, 1), (3, 3, 1)))):
    for _a, _b, _v in _terms:
        _ROT_FORMS[_k, _a, _b] = _ROT_FORMS[_k, _b, _a] = _v
# (4, 36): q @ _ROT_STACK viewed (9, 4) is A_k·q for every k
_ROT_STACK = _ROT_FORMS.transpose(1, 0, 2).reshape(4, 36)


@functools.lru_cache(maxsize=None)
def _rot_stack(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """_ROT_STACK on ``device``, copied once: a host-to-device copy inside the alignment step would stall every
    eager step and makes a CUDA-graph capture of the step fail."""
    return torch.as_tensor(_ROT_STACK, dtype=dtype, device=device)


class _RigidFromParams(torch.autograd.Function):
    """(B, >=7) storage vectors -> (B, 3, 4) [R | T] with a closed-form backward.

    The alignment builds these matrices for every frame and edge at every Adam step; roma's conversion plus
    the normalisation and assembly is ~30 autograd nodes on a few dozen numbers, which costs more than the
    coarse pairwise loss itself. Here it is one matmul forward and one backward (tested against roma).
    """

    @staticmethod
    def forward(ctx, params):
        stack = _rot_stack(params.dtype, params.device)
        quat = params[:, :4]
        norm = quat.norm(dim=1, keepdim=True)
        unit = quat / norm
        forms = (unit @ stack).view(-1, 9, 4)                                 # A_k·u
        rot = torch.bmm(forms, unit.unsqueeze(2)).view(-1, 3, 3)              # uᵀ·A_k·u
        log_t = params[:, 4:7]
        trans = signed_expm1(log_t)
        ctx.save_for_backward(unit, norm, forms, log_t)
        ctx.width = params.shape[1]
        return torch.cat([rot, trans.unsqueeze(2)], dim=2)

    @staticmethod
    def backward(ctx, grad):
        unit, norm, forms, log_t = ctx.saved_tensors
        d_unit = 2 * torch.bmm(grad[:, :, :3].reshape(-1, 1, 9), forms).squeeze(1)
        d_quat = (d_unit - unit * (unit * d_unit).sum(dim=1, keepdim=True)) / norm
        d_params = grad.new_zeros((grad.shape[0], ctx.width))
        d_params[:, :4] = d_quat
        # d signed_expm1 = sign(x)²·exp(|x|), as autograd differentiates it: zero at exactly 0, so a translation
        # initialised to 0 (the MST root's) never moves, which fixes the gauge as the reference does
        d_params[:, 4:7] = grad[:, :, 3] * torch.sign(log_t).square() * torch.exp(torch.abs(log_t))
        return d_params


def pose_params_to_rt(params: torch.Tensor) -> torch.Tensor:
    """(B, >=7) [quat XYZW (any norm), signed_log1p(T)] -> (B, 3, 4) [R | T].

    The quaternion is normalised on use; extra trailing entries (edge log-scale) are ignored.
    """
    return _RigidFromParams.apply(params)


def with_last_row(top: torch.Tensor) -> torch.Tensor:
    """(B, 3, 4) top rows -> (B, 4, 4) with the last row [0, 0, 0, 1]."""
    return torch.cat([top, top.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(top.shape[0], 1, 4)], dim=1)


def pose_params_to_matrix(params: torch.Tensor) -> torch.Tensor:
    """(B, >=7) storage vectors -> (B, 4, 4) rigid transforms (:func:`pose_params_to_rt` with the last row)."""
    return with_last_row(pose_params_to_rt(params))


def rigid_to_params(rot: torch.Tensor, trans: torch.Tensor, scale=None) -> torch.Tensor:
    """Rotation (3,3) + translation (3,) [+ scale] -> storage vector.

    7-vector [quat XYZW, signed_log1p(T)] or, with a scale, the edge 8-vector
    [quat, signed_log1p(T / s), log s] (the translation is stored divided by the scale).
    """
    quat = roma.rotmat_to_unitquat(rot)
    if scale is None:
        return torch.cat([quat, signed_log1p(trans)])
    s = torch.as_tensor(scale, dtype=rot.dtype, device=rot.device).reshape(())
    return torch.cat([quat, signed_log1p(trans / s), torch.log(s).reshape(1)])


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(H, W, 2) integer pixel coordinates (u, v) as floats."""
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                          torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack([u, v], dim=-1)


def geotrf(trf: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Apply (..., 4, 4) transforms to (..., M, 3) points (batch dims broadcast)."""
    return pts @ trf[..., :3, :3].transpose(-1, -2) + trf[..., None, :3, 3]


def inverse_rigid(trf: torch.Tensor) -> torch.Tensor:
    """Inverse of (..., 4, 4) rigid transforms (rotation block orthonormal)."""
    rot_t = trf[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(trf)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ trf[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1
    return out


def depth_to_cam_points(depth: torch.Tensor, focal: torch.Tensor, pp: torch.Tensor,
                        grid: torch.Tensor) -> torch.Tensor:
    """Back-project depth (..., M) at pixels grid (M, 2) -> camera points (..., M, 3).

    X = ((u − cx)·d/f, (v − cy)·d/f, d); focal broadcastable to depth's batch dims (shape (...,) or scalar).
    """
    f = torch.as_tensor(focal, dtype=depth.dtype, device=depth.device)
    f = f.reshape(f.shape + (1,) * (depth.dim() - f.dim())) if f.dim() else f
    d = depth.unsqueeze(-1)
    xy = d * (grid - pp) / (f.unsqueeze(-1) if f.dim() else f)
    return torch.cat([xy, d], dim=-1)


def intrinsics_matrix(focal, height: int, width: int, n: int = 1) -> np.ndarray:
    """(n, 3, 3) float32 K with the focal on the diagonal and the principal point (W/2, H/2)."""
    k = np.zeros((n, 3, 3), np.float32)
    k[:, 0, 0] = k[:, 1, 1] = np.asarray(focal, np.float32)
    k[:, 0, 2] = width / 2
    k[:, 1, 2] = height / 2
    k[:, 2, 2] = 1
    return k
