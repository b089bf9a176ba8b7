"""Confidence cleaning after the alignment (the reference's `clean_pointcloud`, fixture `conf_clean`).

A pixel of frame i whose world point, seen from camera j, lies clearly in front of what camera j
observes there (depth < (1 − tol)·depth_j) while being less confident than camera j's pixel is an
occluding "floater": its confidence is clipped to `bad_conf` (0). Frames are processed in order and
the cleaned confidences are reused for later comparisons, as in the reference.
"""
from __future__ import annotations

import numpy as np
import torch

from .geometry import as_tensor, geotrf, inverse_rigid, pixel_grid


@torch.no_grad()
def clean_confidence(conf, poses_c2w, depths, focal, tol: float = 1e-3, bad_conf: float = 0.0,
                     intrinsics=None) -> np.ndarray:
    """conf (N, H, W), poses (N, 4, 4) camera-to-world, depths (N, H, W), shared focal -> cleaned conf.

    `intrinsics` (fx, fy, cx, cy) replaces the shared focal and centred principal point when given."""
    assert 0 <= tol < 1
    res = as_tensor(conf).clone()
    poses = as_tensor(poses_c2w)
    depth = as_tensor(depths)
    n, h, w = res.shape
    grid = pixel_grid(h, w).reshape(-1, 2)
    if intrinsics is None:
        f = torch.tensor([float(focal), float(focal)])
        pp = torch.tensor([w / 2, h / 2])
    else:
        f = torch.tensor([float(intrinsics[0]), float(intrinsics[1])])
        pp = torch.tensor([float(intrinsics[2]), float(intrinsics[3])])
    cam = depth.reshape(n, -1, 1)
    world = geotrf(poses, torch.cat([cam * (grid - pp) / f, cam], dim=-1))             # (N, HW, 3)
    w2c = inverse_rigid(poses)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            proj = geotrf(w2c[j], world[i])                                           # (HW, 3)
            z = proj[:, 2]
            u = (f[0] * proj[:, 0] / z + pp[0]).round()
            v = (f[1] * proj[:, 1] / z + pp[1]).round()
            inside = (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
            idx = inside.nonzero()[:, 0]
            vj = v[idx].long()
            uj = u[idx].long()
            conf_i = res[i].reshape(-1)
            bad = (z[idx] < (1 - tol) * depth[j, vj, uj]) & (conf_i[idx] < res[j, vj, uj])
            sel = idx[bad]
            conf_i[sel] = conf_i[sel].clip(max=bad_conf)
    return res.numpy()
