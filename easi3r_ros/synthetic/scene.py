"""Procedural rooms: a box-shaped room with textured solids, sampled from a numpy Generator.

World frame: metres, z up, the room is the box [0, Lx] × [0, Ly] × [0, Lz] (floor at z = 0).
Solids are cuboids (yawed about z), spheres and vertical cylinders. A moving solid follows
``centre(t) = centre + velocity·t + wobble·sin(2π·wobble_hz·t + phase)`` and ``yaw(t) = yaw + yaw_rate·t``
(t in seconds), so its texture moves with it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import List, Sequence

import numpy as np
import torch

KINDS = ("cuboid", "sphere", "cylinder")
ROOM_FACES = 6  # material slots of the room: x=0, x=Lx, y=0, y=Ly, z=0 (floor), z=Lz (ceiling)


@dataclass
class Material:
    """Photograph ``texture`` of the split's bank, repeated every ``metres_per_repeat``, multiplied by
    ``tint`` (RGB gains) and shifted by ``uv_offset`` (in repeats)."""

    texture: int
    metres_per_repeat: float
    tint: np.ndarray
    uv_offset: np.ndarray


@dataclass
class Solid:
    """``size``: cuboid half extents (x, y, z) in its own frame; sphere (r, r, r); cylinder (r, r, half height)."""

    kind: str
    centre: np.ndarray
    size: np.ndarray
    yaw: float
    material: Material
    instance: int
    moving: bool = False
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    yaw_rate: float = 0.0
    wobble: np.ndarray = field(default_factory=lambda: np.zeros(3))
    wobble_hz: float = 0.0
    wobble_phase: float = 0.0

    @property
    def bounding_radius(self) -> float:
        return float(np.linalg.norm(self.size)) if self.kind == "cuboid" else (
            float(self.size[0]) if self.kind == "sphere" else float(np.hypot(self.size[0], self.size[2])))

    def centre_at(self, t: float) -> np.ndarray:
        return (self.centre + self.velocity * t
                + self.wobble * np.sin(2 * np.pi * self.wobble_hz * t + self.wobble_phase))

    def at(self, t: float) -> "Solid":
        """This solid posed at time ``t`` (seconds); a static solid is returned unchanged."""
        if not self.moving:
            return self
        return replace(self, centre=self.centre_at(t), yaw=self.yaw + self.yaw_rate * t)

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Signed distance (m, negative inside) of world ``points`` (..., 3) to this solid (as posed)."""
        p = np.asarray(points, dtype=np.float64) - self.centre
        if self.kind == "sphere":
            return np.linalg.norm(p, axis=-1) - self.size[0]
        if self.kind == "cylinder":
            q = np.stack([np.linalg.norm(p[..., :2], axis=-1) - self.size[0], np.abs(p[..., 2]) - self.size[2]], -1)
        else:
            c, s = np.cos(self.yaw), np.sin(self.yaw)
            local = np.stack([c * p[..., 0] + s * p[..., 1], -s * p[..., 0] + c * p[..., 1], p[..., 2]], -1)
            q = np.abs(local) - self.size
        return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(axis=-1), 0)


@dataclass
class Room:
    size: np.ndarray            # (Lx, Ly, Lz) metres
    materials: List[Material]   # ROOM_FACES materials
    light_dir: np.ndarray       # unit vector towards the (directional) light
    ambient: float              # shade = ambient + (1 - ambient)·max(0, n·light)
    solids: List[Solid]

    def at(self, t: float) -> "Room":
        return replace(self, solids=[s.at(t) for s in self.solids])

    def clearance(self, points: np.ndarray) -> np.ndarray:
        """Distance (m) of world ``points`` (..., 3) to the nearest surface (walls, floor, ceiling, solids);
        negative when outside the room or inside a solid."""
        p = np.asarray(points, dtype=np.float64)
        d = np.minimum(p, self.size - p).min(axis=-1)
        for s in self.solids:
            d = np.minimum(d, s.signed_distance(p))
        return d


def random_material(rng: np.random.Generator, n_textures: int, grey: Sequence[bool],
                    repeat_range=(0.5, 2.0)) -> Material:
    tex = int(rng.integers(n_textures))
    if grey[tex]:  # grey photographs get a clear colour cast so that surfaces differ in colour too
        tint = rng.uniform(0.45, 1.1, 3)
    else:
        tint = rng.uniform(0.85, 1.1, 3)
    return Material(tex, float(rng.uniform(*repeat_range)), tint, rng.uniform(0, 1, 2))


def random_solid(rng: np.random.Generator, room_size: np.ndarray, n_textures: int, grey: Sequence[bool],
                 instance: int, kind: str | None = None, max_extent: float = 1.6) -> Solid:
    """A static solid inside the room; most stand on the floor, some float (shelves, lamps, balls)."""
    kind = kind or KINDS[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
    mat = random_material(rng, n_textures, grey, (0.3, 1.2))
    if kind == "cuboid":
        size = rng.uniform([0.15, 0.15, 0.15], [max_extent / 2, max_extent / 2, min(1.0, room_size[2] / 3)])
    elif kind == "sphere":
        size = np.full(3, rng.uniform(0.15, max_extent / 3))
    else:
        r = rng.uniform(0.1, max_extent / 3)
        size = np.array([r, r, rng.uniform(0.2, min(1.0, room_size[2] / 3))])
    reach = float(np.hypot(size[0], size[1]))
    xy = rng.uniform(reach * 0.5, room_size[:2] - reach * 0.5)
    on_floor = rng.random() < 0.8
    z = size[2] if on_floor else rng.uniform(size[2] + 0.3, room_size[2] - size[2] - 0.2)
    yaw = float(rng.uniform(-np.pi, np.pi)) if (kind == "cuboid" and rng.random() < 0.6) else 0.0
    return Solid(kind, np.array([xy[0], xy[1], z]), size, yaw, mat, instance)


def random_room(rng: np.random.Generator, n_textures: int, grey: Sequence[bool], n_solids: int) -> Room:
    """Room 4–9 m × 4–9 m × 2.5–3.5 m with ``n_solids`` static solids (instances 1..n_solids)."""
    size = np.array([rng.uniform(4, 9), rng.uniform(4, 9), rng.uniform(2.5, 3.5)])
    mats = [random_material(rng, n_textures, grey) for _ in range(ROOM_FACES)]
    az, el = rng.uniform(-np.pi, np.pi), rng.uniform(np.radians(30), np.radians(80))
    light = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    solids = [random_solid(rng, size, n_textures, grey, k + 1) for k in range(n_solids)]
    return Room(size, mats, light, float(rng.uniform(0.4, 0.6)), solids)


# ------------------------------------------------------------------------------------------ packing

@dataclass
class SceneTensors:
    """B scene instances (one per rendered view) as padded tensors; see :func:`pack_rooms`.

    Solid slots are ordered cuboids, spheres, cylinders; material slot ``ROOM_FACES + j`` belongs to
    solid slot j. Padding slots are tiny solids 10 km outside the room: they never produce a hit.
    """

    room_size: torch.Tensor      # (B, 3)
    light_dir: torch.Tensor      # (B, 3)
    ambient: torch.Tensor        # (B,)
    cub_centre: torch.Tensor     # (B, Nc, 3)
    cub_half: torch.Tensor       # (B, Nc, 3)
    cub_cos_sin: torch.Tensor    # (B, Nc, 2) cos and sin of the yaw
    sph_centre: torch.Tensor     # (B, Ns, 3)
    sph_radius: torch.Tensor     # (B, Ns)
    cyl_centre: torch.Tensor     # (B, Ny, 3)
    cyl_radius: torch.Tensor     # (B, Ny)
    cyl_half_height: torch.Tensor  # (B, Ny)
    instance: torch.Tensor       # (B, N) int32 instance id of each solid slot (N = Nc + Ns + Ny)
    moving: torch.Tensor         # (B, N) bool
    mat_texture: torch.Tensor    # (B, 6 + N) int64
    mat_scale: torch.Tensor      # (B, 6 + N) metres per repeat
    mat_tint: torch.Tensor       # (B, 6 + N, 3)
    mat_offset: torch.Tensor     # (B, 6 + N, 2)
    bounds: np.ndarray           # (B, N, 4) bounding sphere (centre x, y, z, radius) of each slot, on the CPU

    @property
    def n_cuboids(self) -> int:
        return self.cub_centre.shape[1]

    @property
    def n_spheres(self) -> int:
        return self.sph_centre.shape[1]


def pack_rooms(rooms: Sequence[Room], device: torch.device | str = "cpu") -> SceneTensors:
    """Rooms (each already posed at its view's time) → padded :class:`SceneTensors` on ``device``."""
    B = len(rooms)
    by_kind = [[[s for s in r.solids if s.kind == k] for r in rooms] for k in KINDS]
    n = [max(1, max(len(x) for x in lists)) for lists in by_kind]  # at least one (inactive) slot per kind
    N = sum(n)
    # Padding slots: tiny solids far outside the room, so a ray can never hit them before a wall.
    centre = np.full((3, B, max(n), 3), -1e4)
    size = np.full((3, B, max(n), 3), 1e-3)
    yaw = np.zeros((3, B, max(n)))
    inst = np.zeros((B, N), np.int32)
    moving = np.zeros((B, N), bool)
    tex = np.zeros((B, ROOM_FACES + N), np.int64)
    scale = np.ones((B, ROOM_FACES + N))
    tint = np.ones((B, ROOM_FACES + N, 3))
    off = np.zeros((B, ROOM_FACES + N, 2))
    for b, room in enumerate(rooms):
        mats = list(room.materials)
        slot_mats = [None] * N
        for k in range(3):
            base = sum(n[:k])
            for i, s in enumerate(by_kind[k][b]):
                centre[k, b, i], size[k, b, i], yaw[k, b, i] = s.centre, s.size, s.yaw
                inst[b, base + i], moving[b, base + i] = s.instance, s.moving
                slot_mats[base + i] = s.material
        for j, m in enumerate(mats + slot_mats):
            if m is not None:
                tex[b, j], scale[b, j], tint[b, j], off[b, j] = m.texture, m.metres_per_repeat, m.tint, m.uv_offset

    def f32(a):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=device)

    cs = np.stack([np.cos(yaw[0]), np.sin(yaw[0])], -1)
    radius = np.concatenate([np.linalg.norm(size[0, :, :n[0]], axis=-1), size[1, :, :n[1], 0],
                             np.hypot(size[2, :, :n[2], 0], size[2, :, :n[2], 2])], axis=1)
    bounds = np.concatenate([np.concatenate([centre[k, :, :n[k]] for k in range(3)], axis=1), radius[..., None]], -1)
    return SceneTensors(
        room_size=f32([r.size for r in rooms]), light_dir=f32([r.light_dir for r in rooms]),
        ambient=f32([r.ambient for r in rooms]),
        cub_centre=f32(centre[0, :, :n[0]]), cub_half=f32(size[0, :, :n[0]]), cub_cos_sin=f32(cs[:, :n[0]]),
        sph_centre=f32(centre[1, :, :n[1]]), sph_radius=f32(size[1, :, :n[1], 0]),
        cyl_centre=f32(centre[2, :, :n[2]]), cyl_radius=f32(size[2, :, :n[2], 0]),
        cyl_half_height=f32(size[2, :, :n[2], 2]),
        instance=torch.as_tensor(inst, device=device), moving=torch.as_tensor(moving, device=device),
        mat_texture=torch.as_tensor(tex, device=device), mat_scale=f32(scale), mat_tint=f32(tint), mat_offset=f32(off),
        bounds=bounds,
    )
