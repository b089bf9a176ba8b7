"""Vectorised ray casting of :class:`~easi3r_ros.synthetic.scene.SceneTensors` in torch (CPU or CUDA).

One pinhole camera per scene instance. Pixel (u, v) at integer coordinates u = 0..W−1, v = 0..H−1
(spec §9) looks along ``d_cam = ((u − cx)/fx, (v − cy)/fy, 1)`` in the REP 103 optical frame (x right,
y down, z forward), so the ray parameter of a hit *is* its depth z. Pass 1 finds the nearest surface of
every ray (analytic room box, slab test for yawed cuboids, quadratics for spheres and vertical
cylinders); pass 2 computes normal, planar texture coordinates and material of the winner only.
Shading is Lambertian: one directional light plus ambient, no shadows, view-independent, so a surface
point has the same colour in every view.
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import numpy as np
import torch

from .scene import ROOM_FACES, SceneTensors
from .textures import MIP_LEVELS, TextureBank

FACE_SHIFT = (0.37, 0.61)  # metres, per face index of a cuboid


def pixel_directions(K: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    """(B, H·W, 3) ray directions in the camera optical frame with z = 1, row-major pixels."""
    H, W = hw
    v, u = torch.meshgrid(torch.arange(H, device=K.device, dtype=K.dtype),
                          torch.arange(W, device=K.device, dtype=K.dtype), indexing="ij")
    u, v = u.reshape(1, -1), v.reshape(1, -1)
    x = (u - K[:, 0, 2:3]) / K[:, 0, 0:1]
    y = (v - K[:, 1, 2:3]) / K[:, 1, 1:2]
    return torch.stack([x, y, torch.ones_like(x)], dim=-1)


def screen_rects(bounds: np.ndarray, cam_to_world: np.ndarray, K: np.ndarray, hw: Tuple[int, int]) -> List:
    """Per solid slot, the pixel rectangle (v0, v1, u0, u1) outside which no view of the batch can see it
    (union over the batch of its bounding sphere's exact x/z and y/z extents), or None when no view does.
    Lets pass 1 test each solid on its own few pixels only."""
    H, W = hw
    R, c = cam_to_world[:, :3, :3], cam_to_world[:, :3, 3]
    q = np.einsum("bji,bnj->bni", R, bounds[..., :3] - c[:, None])  # sphere centres in the camera frames
    rad = bounds[..., 3]
    real = (rad > 0) & (np.linalg.norm(q, axis=-1) < 1e3)  # padding slots are 10 km away
    lo, hi = [], []
    for k, f, pc in ((1, K[:, 1, 1], K[:, 1, 2]), (0, K[:, 0, 0], K[:, 0, 2])):  # v, then u
        # The x/z (y/z) extent of a sphere is that of its disc in the xz (yz) plane: the two tangents
        # from the camera centre at angles θ ± asin(r/ρ) from the optical axis.
        rho = np.hypot(q[..., k], q[..., 2])
        around = rho <= rad * 1.001  # the camera is within the disc: any direction
        half = np.arcsin(np.clip(rad / np.maximum(rho, 1e-12), 0, 1))
        theta = np.arctan2(q[..., k], q[..., 2])
        a0, a1 = theta - half, theta + half
        behind = ~around & ((a1 <= -np.pi / 2) | (a0 >= np.pi / 2))
        real &= ~behind
        with np.errstate(invalid="ignore", over="ignore"):
            p0 = np.where(around | (a0 <= -np.pi / 2), -np.inf, f[:, None] * np.tan(a0) + pc[:, None])
            p1 = np.where(around | (a1 >= np.pi / 2), np.inf, f[:, None] * np.tan(a1) + pc[:, None])
        lo.append(p0)
        hi.append(p1)
    rects = []
    for n in range(bounds.shape[1]):
        seen = real[:, n]
        if not seen.any():
            rects.append(None)
            continue
        box = []
        for k, size in ((0, H), (1, W)):
            a, b = lo[k][seen, n].min(), hi[k][seen, n].max()
            box += [max(0, int(np.floor(a)) - 1) if np.isfinite(a) else 0,
                    min(size, int(np.ceil(b)) + 2) if np.isfinite(b) else size]
        v0, v1, u0, u1 = box
        rects.append((v0, v1, u0, u1) if (v1 > v0 and u1 > u0) else None)
    return rects


def _nearest_hits(sc: SceneTensors, o: torch.Tensor, d: torch.Tensor, rects: List):
    """Pass 1: depth t (B, H, W), winning solid slot (−1 = room), room face (B, H, W); ``d`` (B, H, W, 3)."""
    L = sc.room_size
    inv_d = 1.0 / d
    # Room (camera inside): exit distance along each axis; 1/0 = ±inf gives the right answer for axis-parallel rays.
    exits = torch.maximum(-o[:, None, None] * inv_d, (L - o)[:, None, None] * inv_d)
    best_t, axis = exits.min(-1)
    room_face = 2 * axis + (torch.gather(d, -1, axis.unsqueeze(-1)).squeeze(-1) > 0).long()
    best = torch.full_like(best_t, -1, dtype=torch.long)
    inf = float("inf")
    dxy = d[..., 0] ** 2 + d[..., 1] ** 2
    dd = dxy + d[..., 2] ** 2

    def col(x):  # (B, 1, 1) per-view scalar
        return x.reshape(-1, 1, 1)

    for slot, rect in enumerate(rects):
        if rect is None:
            continue
        v0, v1, u0, u1 = rect
        win = (slice(None), slice(v0, v1), slice(u0, u1))
        d0, d1, d2 = (d[win + (k,)] for k in range(3))
        inv_d2 = inv_d[win + (2,)]
        if slot < sc.n_cuboids:  # slab test in the cuboid's own (yawed) frame
            i = slot
            oc = o - sc.cub_centre[:, i]
            h = sc.cub_half[:, i]
            cs, sn = col(sc.cub_cos_sin[:, i, 0]), col(sc.cub_cos_sin[:, i, 1])
            ox, oy, oz = col(oc[:, 0]), col(oc[:, 1]), col(oc[:, 2])
            lx, ly = cs * ox + sn * oy, cs * oy - sn * ox
            ix, iy = (cs * d0 + sn * d1).reciprocal_(), (cs * d1 - sn * d0).reciprocal_()
            t, t_far = None, None
            for lo, hk, ik in ((lx, col(h[:, 0]), ix), (ly, col(h[:, 1]), iy), (oz, col(h[:, 2]), inv_d2)):
                a, b = (-hk - lo) * ik, (hk - lo) * ik
                near, far = torch.minimum(a, b), torch.maximum(a, b)
                t = near if t is None else torch.maximum(t, near)
                t_far = far if t_far is None else torch.minimum(t_far, far)
            hit = (t <= t_far) & (t > 0)
        elif slot < sc.n_cuboids + sc.n_spheres:
            i = slot - sc.n_cuboids
            oc = o - sc.sph_centre[:, i]
            b = d0 * col(oc[:, 0]) + d1 * col(oc[:, 1]) + d2 * col(oc[:, 2])
            c = col((oc * oc).sum(-1) - sc.sph_radius[:, i] ** 2)
            ddw = dd[win]
            disc = b * b - ddw * c
            t = (-b - torch.sqrt(disc.clamp_min(0))) / ddw
            hit = (disc >= 0) & (t > 0)
        else:
            i = slot - sc.n_cuboids - sc.n_spheres
            oc = o - sc.cyl_centre[:, i]
            r, hz = col(sc.cyl_radius[:, i]), col(sc.cyl_half_height[:, i])
            ox, oy, oz = col(oc[:, 0]), col(oc[:, 1]), col(oc[:, 2])
            dxyw = dxy[win]
            b = d0 * ox + d1 * oy
            disc = b * b - dxyw * (ox * ox + oy * oy - r * r)
            ts = (-b - torch.sqrt(disc.clamp_min(0))) / dxyw
            side = (disc >= 0) & (ts > 0) & ((oz + ts * d2).abs() <= hz)
            # Only the cap facing the camera can be hit first, and only when the camera is beyond its plane.
            tc = (torch.where(oz > 0, hz, -hz) - oz) * inv_d2
            xc, yc = ox + tc * d0, oy + tc * d1
            cap = (oz.abs() > hz) & (tc > 0) & (xc * xc + yc * yc <= r * r)
            t = torch.minimum(ts.masked_fill(~side, inf), tc.masked_fill(~cap, inf))
            hit = side | cap
        t = t.masked_fill(~hit, inf)
        bt = best_t[win]
        best[win].masked_fill_(t < bt, slot)
        bt.copy_(torch.minimum(bt, t))
    return best_t, best, room_face


def _gather_slot(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """table (B, N, ...) indexed per pixel by idx (B, P) → (B, P, ...)."""
    extra = table.shape[2:]
    flat = table.reshape(table.shape[0], table.shape[1], -1)
    out = torch.gather(flat, 1, idx.unsqueeze(-1).expand(-1, -1, flat.shape[-1]))
    return out.reshape(*idx.shape, *extra)


def _surface(sc: SceneTensors, p: torch.Tensor, slot: torch.Tensor, room_face: torch.Tensor):
    """Pass 2: world normal (B, P, 3), texture coordinates in repeats (B, P, 2) (before the material's
    offset), material slot (B, P) and metres per repeat (B, P), for the winning surface of each pixel.
    Solids are handled on the (few) pixels they won only."""
    B, P = slot.shape
    Lz = sc.room_size[:, 2:3]
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    # Room: planar coordinates on each face, image "up" = world up on the walls; normals point inwards.
    axis = room_face // 2
    normal = torch.zeros_like(p)
    normal.scatter_(-1, axis.unsqueeze(-1), (1.0 - 2.0 * (room_face % 2).to(p.dtype)).unsqueeze(-1))
    u = torch.where(axis == 0, y, x)
    v = torch.where(axis == 2, y, Lz - z)
    mat = torch.where(slot >= 0, ROOM_FACES + slot, room_face)
    scale = _gather_slot(sc.mat_scale, mat)
    uv = torch.stack([u, v], -1)
    nc, ns = sc.n_cuboids, sc.n_spheres
    flat_slot = slot.reshape(-1)
    batch_of = torch.arange(B, device=p.device).repeat_interleave(P)
    p_flat, n_flat, uv_flat = p.reshape(-1, 3), normal.reshape(-1, 3), uv.reshape(-1, 2)
    scale_flat = scale.reshape(-1)
    for lo, hi in ((0, nc), (nc, nc + ns), (nc + ns, None)):
        sel = (flat_slot >= lo) if hi is None else ((flat_slot >= lo) & (flat_slot < hi))
        pix = sel.nonzero().squeeze(-1)
        if pix.numel() == 0:
            continue
        b, i = batch_of[pix], flat_slot[pix] - lo
        q = p_flat[pix]
        if lo == 0:
            n_k, uv_k = _cuboid_surface(q, sc.cub_centre[b, i], sc.cub_half[b, i], sc.cub_cos_sin[b, i])
        elif hi is not None:
            n_k, uv_k = _sphere_surface(q, sc.sph_centre[b, i], sc.sph_radius[b, i], scale_flat[pix])
        else:
            n_k, uv_k = _cylinder_surface(q, sc.cyl_centre[b, i], sc.cyl_radius[b, i], sc.cyl_half_height[b, i],
                                          scale_flat[pix])
        n_flat[pix] = n_k
        uv_flat[pix] = uv_k
    return normal, uv / scale.unsqueeze(-1), mat, scale


def _cuboid_surface(p, c, h, cos_sin):
    """Normal (K, 3) and planar coordinates (K, 2) in metres of points p (K, 3) on yawed cuboids; each face
    is shifted by its index × FACE_SHIFT so the faces show different parts of the photograph."""
    cs, sn = cos_sin[:, 0], cos_sin[:, 1]
    q = p - c
    q = torch.stack([cs * q[:, 0] + sn * q[:, 1], cs * q[:, 1] - sn * q[:, 0], q[:, 2]], -1)
    ax = (q.abs() / h).argmax(-1)
    sg = torch.sign(q.gather(-1, ax.unsqueeze(-1)).squeeze(-1))
    n_local = torch.zeros_like(q)
    n_local.scatter_(-1, ax.unsqueeze(-1), sg.unsqueeze(-1))
    normal = torch.stack([cs * n_local[:, 0] - sn * n_local[:, 1], sn * n_local[:, 0] + cs * n_local[:, 1],
                          n_local[:, 2]], -1)
    qh = q + h
    down = h[:, 2] - q[:, 2]
    u = torch.where(ax == 0, qh[:, 1], qh[:, 0])
    v = torch.where(ax == 2, qh[:, 1], down)
    face = (2 * ax + (sg > 0).long()).to(p.dtype)
    return normal, torch.stack([u + face * FACE_SHIFT[0], v + face * FACE_SHIFT[1]], -1)


def _sphere_surface(p, c, r, scale):
    n = (p - c) / r.unsqueeze(-1)
    # An even number of mirrored repeats around the equator keeps the longitude seam invisible.
    reps = torch.clamp(2 * torch.round(math.pi * r / scale), min=2)
    lon = torch.atan2(n[:, 1], n[:, 0])
    u = (lon + math.pi) / (2 * math.pi) * reps * scale
    v = torch.asin(n[:, 2].clamp(-1, 1)) * r
    return n, torch.stack([u, v], -1)


def _cylinder_surface(p, c, r, hz, scale):
    q = p - c
    rho = torch.sqrt(q[:, 0] ** 2 + q[:, 1] ** 2).clamp_min(1e-9)
    on_side = ((rho - r).abs() < (q[:, 2].abs() - hz).abs()).unsqueeze(-1)
    zero = torch.zeros_like(rho)
    normal = torch.where(on_side, torch.stack([q[:, 0] / rho, q[:, 1] / rho, zero], -1),
                         torch.stack([zero, zero, torch.sign(q[:, 2])], -1))
    reps = torch.clamp(2 * torch.round(math.pi * r / scale), min=2)
    u = (torch.atan2(q[:, 1], q[:, 0]) + math.pi) / (2 * math.pi) * reps * scale
    uv = torch.where(on_side, torch.stack([u, hz - q[:, 2]], -1), q[:, :2])
    return normal, uv


def sample_texture(bank: TextureBank, tex: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                   lod: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup at the nearest mip level with mirrored repeat; u, v in repeats, lod in levels;
    returns (P, 3) in [0, 1]. Hand-written because every pixel picks its own photograph and mip level,
    which grid_sample cannot. Index arithmetic stays in float32 (exact below 2^24 texels)."""
    level = torch.round(lod).clamp(0, MIP_LEVELS - 1).long()
    s = torch.tensor([float(bank.size >> k) for k in range(MIP_LEVELS)], device=u.device)[level]
    base = torch.tensor([float(o) for o in bank.level_offsets], device=u.device)[level] + tex.to(u.dtype) * s * s
    x, y = u * s - 0.5, v * s - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = (x - x0).unsqueeze(-1), (y - y0).unsqueeze(-1)
    two_s = 2 * s

    def mirror(k):  # period 2s: s texels forward, then s texels backward
        m = torch.remainder(k, two_s)
        return torch.where(m < s, m, two_s - 1 - m)

    xa, xb = mirror(x0), mirror(x0 + 1)
    ya, yb = mirror(y0) * s + base, mirror(y0 + 1) * s + base
    texels = bank.texels

    def texel(row, col):
        return texels.index_select(0, (row + col).long()).to(u.dtype)

    # a + (b − a)·f: torch.lerp with a broadcast weight is several times slower on the CPU
    top = texel(ya, xa)
    top = top + (texel(ya, xb) - top) * fx
    bottom = texel(yb, xa)
    bottom = bottom + (texel(yb, xb) - bottom) * fx
    return (top + (bottom - top) * fy) * (1.0 / 255.0)


def render(sc: SceneTensors, cam_to_world: torch.Tensor, K: torch.Tensor, hw: Tuple[int, int],
           bank: TextureBank) -> Dict[str, torch.Tensor]:
    """Render B views, view b of scene instance b.

    ``cam_to_world`` (B, 4, 4) and ``K`` (B, 3, 3) float32 on the scene's device. Returns
    ``rgb`` (B, H, W, 3) float in [0, 1]; ``depth`` (B, H, W) z in the view's own camera (m);
    ``points_cam`` (B, H, W, 3) in the camera optical frame; ``points_world`` (B, H, W, 3);
    ``instance`` (B, H, W) int32 (0 = room); ``dynamic`` (B, H, W) bool (hit a moving solid);
    ``valid`` (B, H, W) bool (finite hit).
    """
    H, W = hw
    B = cam_to_world.shape[0]
    dcam = pixel_directions(K, hw)
    R, o = cam_to_world[:, :3, :3], cam_to_world[:, :3, 3]
    d = torch.einsum("bij,bpj->bpi", R, dcam).contiguous()
    rects = screen_rects(sc.bounds, cam_to_world.detach().cpu().double().numpy(),
                         K.detach().cpu().double().numpy(), hw)
    t, slot, room_face = (x.reshape(B, -1) for x in _nearest_hits(sc, o, d.reshape(B, H, W, 3), rects))
    valid = torch.isfinite(t)
    t = torch.where(valid, t, torch.zeros_like(t))
    p = o.unsqueeze(1) + t.unsqueeze(-1) * d
    normal, rep, mat, scale = _surface(sc, p, slot, room_face)
    # Shading sees the side facing the camera (component sums: reductions over a size-3 axis are slow).
    dn = normal[..., 0] * d[..., 0] + normal[..., 1] * d[..., 1] + normal[..., 2] * d[..., 2]
    light = sc.light_dir[:, None]
    nl = normal[..., 0] * light[..., 0] + normal[..., 1] * light[..., 1] + normal[..., 2] * light[..., 2]
    nl = torch.where(dn > 0, -nl, nl)
    cos_view = dn.abs() / torch.sqrt(d[..., 0] ** 2 + d[..., 1] ** 2 + d[..., 2] ** 2)
    shade = sc.ambient[:, None] + (1 - sc.ambient[:, None]) * nl.clamp_min(0)
    # Mip level from the metric footprint of one pixel on the surface (isotropic approximation).
    footprint = t / K[:, 0, 0:1] / cos_view.clamp_min(0.15).sqrt()
    lod = torch.log2((footprint / scale * bank.size).clamp_min(1.0))
    rep = rep + _gather_slot(sc.mat_offset, mat)
    albedo = sample_texture(bank, _gather_slot(sc.mat_texture, mat).reshape(-1), rep[..., 0].reshape(-1),
                            rep[..., 1].reshape(-1), lod.reshape(-1)).reshape(B, -1, 3)
    rgb = (albedo * _gather_slot(sc.mat_tint, mat) * shade.unsqueeze(-1)).clamp(0, 1)
    is_solid = slot >= 0
    s_idx = slot.clamp_min(0)
    instance = torch.where(is_solid, torch.gather(sc.instance, 1, s_idx), torch.zeros_like(s_idx, dtype=torch.int32))
    dynamic = is_solid & torch.gather(sc.moving, 1, s_idx)
    return {
        "rgb": rgb.reshape(B, H, W, 3),
        "depth": t.reshape(B, H, W),
        "points_cam": (dcam * t.unsqueeze(-1)).reshape(B, H, W, 3),
        "points_world": p.reshape(B, H, W, 3),
        "instance": instance.reshape(B, H, W).to(torch.int32),
        "dynamic": dynamic.reshape(B, H, W),
        "valid": valid.reshape(B, H, W),
    }
