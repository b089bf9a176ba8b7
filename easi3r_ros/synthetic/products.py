"""The two products: static pairs (training) and dynamic sequences (evaluation), plus a sequence writer.

Determinism: every scene comes from ``numpy.random.SeedSequence((split code, product code, seed[, index]))``,
so a (seed, split) pair always gives the same scene, and the two splits never share a scene stream.
Static pair i of ``render_static_pairs(seed, B)`` depends on (seed, i, split, hw) only, not on B.
A sequence draws room, camera path and moving objects from three independent child streams, so the same
seed with ``n_moving=0`` is the static twin of the dynamic sequence: same room, same camera path.
Speeds: see the package docstring (:mod:`easi3r_ros.synthetic`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .camera_paths import MAX_TRIES, intrinsics, random_view, second_view, smooth_path
from .raycast import render
from .scene import KINDS, Room, Solid, pack_rooms, random_material, random_room
from .textures import SPLITS, texture_bank, texture_bank_on

SPLIT_CODES = {"train": 1, "heldout": 2}
PAIRS_CODE, SEQUENCE_CODE = 11, 12
MIN_OVERLAP = 0.4            # share of view-2 valid pixels that must project inside view 1
MIN_MOVING_SHARE = 0.01      # each moving object covers at least this share of the image in every frame
FIRST_STAMP_NS = 1_000_000_000  # a zero ROS stamp means "unset" to many tools

PathLike = Union[str, os.PathLike]


def _seed_sequence(split: str, product: int, *keys: int) -> np.random.SeedSequence:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return np.random.SeedSequence([SPLIT_CODES[split], product, *(int(k) % 2 ** 64 for k in keys)])


def _f32(a, device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)


def _render_batch(rooms: Sequence[Room], poses: np.ndarray, Ks: np.ndarray, hw, bank, device):
    """Render view b of rooms[b]. On the CPU view by view (the arrays stay cache-sized and each view tests
    only its own solids, ~1.5x faster than one padded batch); on a GPU all views in one batch."""
    chunk = len(rooms) if device.type == "cuda" else 1
    parts = [render(pack_rooms(rooms[s:s + chunk], device), _f32(poses[s:s + chunk], device),
                    _f32(Ks[s:s + chunk], device), hw, bank) for s in range(0, len(rooms), chunk)]
    return parts[0] if len(parts) == 1 else {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _to_uint8(rgb: torch.Tensor) -> torch.Tensor:
    return torch.round(rgb * 255).to(torch.uint8)


# ------------------------------------------------------------------------------------------- static pairs

@dataclass
class _PairPlan:
    rng: np.random.Generator
    room: Room
    K: np.ndarray
    T1: np.ndarray
    target: np.ndarray
    hand_held: bool
    T2: Optional[np.ndarray] = None
    tries: int = 0
    fallback: bool = False  # T2 is the last resort, accepted without an overlap check


def _plan_pair(seed: int, index: int, split: str, hw) -> _PairPlan:
    bank = texture_bank(split)
    rng = np.random.default_rng(_seed_sequence(split, PAIRS_CODE, seed, index))
    room = random_room(rng, bank.n_textures, bank.grey, int(rng.integers(3, 9)))
    K = intrinsics(hw, rng.uniform(50, 75))
    hand_held = bool(rng.random() < 0.6)
    T1, target = random_view(rng, room, hand_held)
    plan = _PairPlan(rng, room, K, T1, target, hand_held)
    _next_second_view(plan)
    return plan


def _next_second_view(plan: _PairPlan) -> None:
    """Draw the next candidate second pose from the pair's own stream; the motion shrinks as tries fail,
    and after many tries falls back to a 5 cm step forward (always overlapping)."""
    while plan.tries < 40:
        shrink = 1.0 if plan.tries < 8 else 0.5 if plan.tries < 24 else 0.25
        plan.tries += 1
        T2 = second_view(plan.rng, plan.room, plan.T1, plan.target, plan.hand_held, shrink)
        if T2 is not None:
            plan.T2 = T2
            return
    T2 = plan.T1.copy()
    T2[:3, 3] += 0.05 * plan.T1[:3, 2]  # still free: the first camera keeps 0.35 m from every surface
    plan.T2, plan.fallback = T2, True


def _overlap(pts2_in_1: torch.Tensor, valid2: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(B,) share of view-2 valid pixels whose 3D point projects inside view 1 (in front of it)."""
    H, W = valid2.shape[1:]
    z = pts2_in_1[..., 2]
    zs = z.clamp_min(1e-9)
    u = K[:, 0, 0, None, None] * pts2_in_1[..., 0] / zs + K[:, 0, 2, None, None]
    v = K[:, 1, 1, None, None] * pts2_in_1[..., 1] / zs + K[:, 1, 2, None, None]
    inside = (z > 0) & (u >= -0.5) & (u <= W - 0.5) & (v >= -0.5) & (v <= H - 0.5) & valid2
    return inside.flatten(1).sum(1).float() / valid2.flatten(1).sum(1).clamp_min(1).float()


def _relative(T1: np.ndarray, T2: np.ndarray) -> np.ndarray:
    return np.linalg.inv(T1) @ T2


def render_static_pairs(seed: int, batch: int, hw: Tuple[int, int] = (224, 224), split: str = "train",
                        device: Union[str, torch.device] = "cpu") -> Dict[str, torch.Tensor]:
    """B pairs of views of static rooms, for training.

    Returns (all on ``device``): ``img1``, ``img2`` (B, 3, H, W) float32 in [−1, 1] (= (rgb/255 − 0.5)/0.5 of
    the uint8 image); ``pts1`` (B, H, W, 3) view-1 pixels' points in camera-1 optical frame (m); ``pts2``
    (B, H, W, 3) view-2 pixels' points also in camera-1 frame; ``valid1``, ``valid2`` (B, H, W) bool;
    ``depth1``, ``depth2`` (B, H, W) z in each view's own camera (m); ``K`` (B, 3, 3) (principal point
    (W/2, H/2), pixel centres at integer coordinates); ``cam1_to_world``, ``cam2_to_world`` (B, 4, 4).

    Baseline 0.05–0.6 m, relative rotation ≤ 22° (hand-held: any direction, converging or free; robot:
    horizontal motion and yaw); at least 40 % of view-2 valid pixels project inside view 1, the second pose
    being redrawn deterministically (with shrinking motion) until they do.
    """
    device = torch.device(device)
    bank = texture_bank_on(split, str(device))
    plans = [_plan_pair(seed, i, split, hw) for i in range(batch)]
    Ks = np.stack([p.K for p in plans])
    first = _render_batch([p.room for p in plans], np.stack([p.T1 for p in plans]), Ks, hw, bank, device)
    second: Dict[str, torch.Tensor] = {}
    todo = list(range(batch))
    K_t = _f32(Ks, device)
    while todo:
        out = _render_batch([plans[i].room for i in todo], np.stack([plans[i].T2 for i in todo]), Ks[todo], hw,
                            bank, device)
        rel = _f32(np.stack([_relative(plans[i].T1, plans[i].T2) for i in todo]), device)
        pts2 = torch.einsum("bij,bhwj->bhwi", rel[:, :3, :3], out["points_cam"]) + rel[:, None, None, :3, 3]
        out["pts2"] = pts2
        ok = (_overlap(pts2, out["valid"], K_t[todo]) >= MIN_OVERLAP).tolist()
        for j, i in enumerate(todo):
            if ok[j] or plans[i].fallback:
                for k, v in out.items():
                    if k not in second:
                        second[k] = torch.empty((batch, *v.shape[1:]), dtype=v.dtype, device=device)
                    second[k][i] = v[j]
        todo = [i for j, i in enumerate(todo) if not (ok[j] or plans[i].fallback)]
        for i in todo:
            _next_second_view(plans[i])

    def img(rgb: torch.Tensor) -> torch.Tensor:
        return (_to_uint8(rgb).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5

    return {
        "img1": img(first["rgb"]), "img2": img(second["rgb"]),
        "pts1": first["points_cam"], "pts2": second["pts2"],
        "valid1": first["valid"], "valid2": second["valid"],
        "depth1": first["depth"], "depth2": second["depth"],
        "K": K_t,
        "cam1_to_world": _f32(np.stack([p.T1 for p in plans]), device),
        "cam2_to_world": _f32(np.stack([p.T2 for p in plans]), device),
    }


# ------------------------------------------------------------------------------------------- sequences

@dataclass
class SyntheticSequence:
    """A rendered camera sequence with exact ground truth (world frame: z up, metres).

    ``frames``: T × (H, W, 3) uint8 RGB; ``depth`` (T, H, W) float32 z (0 where nothing was hit);
    ``pointmaps`` (T, H, W, 3) float32 world points; ``cam_to_world`` (T, 4, 4) float64 (REP 103 optical
    camera); ``K`` (3, 3) float64; ``stamps_ns`` (T,) int64 (first 1 s, then 1/fps apart);
    ``instances`` (T, H, W) int32 (0 = room shell, k > 0 = solid k); ``dynamic`` (T, H, W) bool
    (pixels of the moving solids, whose ids are ``moving_ids``). ``extra["room"]``: the
    :class:`~.scene.Room` with all its solids (moving ones pose with ``.at(t)``, t = (stamp − first)/1e9 s).
    """

    frames: List[np.ndarray]
    depth: np.ndarray
    pointmaps: np.ndarray
    cam_to_world: np.ndarray
    K: np.ndarray
    stamps_ns: np.ndarray
    instances: np.ndarray
    dynamic: np.ndarray
    seed: int
    split: str
    n_moving: int
    fps: float = 10.0
    moving_ids: Tuple[int, ...] = ()
    camera_style: str = ""
    extra: Dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)


def _project(K: np.ndarray, T: np.ndarray, p: np.ndarray) -> Tuple[np.ndarray, float]:
    q = T[:3, :3].T @ (p - T[:3, 3])
    return (K @ q)[:2] / max(q[2], 1e-9), float(q[2])


def _moving_solid(rng: np.random.Generator, room: Room, poses: np.ndarray, K: np.ndarray, times: np.ndarray,
                  fps: float, hw, instance: int, others: List[Solid], strict: bool, bank,
                  mid_depth: np.ndarray) -> Optional[Solid]:
    """One moving solid seen by every frame, or None when this draw fails the checks.

    It is placed on the view ray of a random central pixel of the middle frame, 1.2–4.5 m away (nearer
    when small), in front of the static surface seen there (``mid_depth``: the middle frame's depth at any resolution),
    moves so that its centre travels 1–5 % of the image width per frame there (about 3–16 px at 320 px),
    may wobble and, for cuboids, turn. Checks at every frame: centre projects inside the image (5 %
    margin), camera clearance, inside the room; strict draws also keep clear of static and other moving
    solids."""
    H, W = hw
    T = len(times)
    m = T // 2
    kind = KINDS[int(rng.integers(3))]
    mat = random_material(rng, bank.n_textures, bank.grey, (0.2, 0.8))
    if kind == "cuboid":
        size = rng.uniform([0.12, 0.12, 0.12], [0.4, 0.4, 0.45])
    elif kind == "sphere":
        size = np.full(3, rng.uniform(0.12, 0.35))
    else:
        r = rng.uniform(0.1, 0.3)
        size = np.array([r, r, rng.uniform(0.15, 0.5)])
    Tm = poses[m]
    frac = rng.uniform(0.2, 0.8, 2)
    pix = frac * np.array([W, H])
    ph, pw = mid_depth.shape
    r0, c0 = int(frac[1] * ph), int(frac[0] * pw)
    behind = float(mid_depth[max(r0 - 1, 0):r0 + 2, max(c0 - 1, 0):c0 + 2].min())
    # Not so far that it shrinks below ~3x the required image share (projected disc of its smallest half size).
    too_small = K[0, 0] * size.min() * np.sqrt(np.pi / (3 * MIN_MOVING_SHARE * H * W))
    far = min(4.5, too_small, behind - float(np.linalg.norm(size)) - 0.15)
    if far < 1.2:
        return None
    depth = rng.uniform(1.2, far)
    ray = np.linalg.inv(K) @ np.array([pix[0], pix[1], 1.0])
    p_mid = Tm[:3, 3] + depth * (Tm[:3, :3] @ ray)
    floating = rng.random() < 0.4
    if not floating:
        p_mid[2] = size[2]  # stands on the floor
    heading = rng.uniform(-np.pi, np.pi)
    direction = np.array([np.cos(heading), np.sin(heading), rng.normal(0, 0.3) if floating else 0.0])
    # Scale the velocity so the centre moves the chosen number of pixels per frame at the middle frame.
    uv0, z0 = _project(K, Tm, p_mid)
    uv1, z1 = _project(K, Tm, p_mid + direction * 0.05)
    px_per_5cm = float(np.linalg.norm(uv1 - uv0))
    if z0 <= 0 or px_per_5cm < 0.3:  # moving (almost) along the view ray: draw again
        return None
    px_per_frame = rng.uniform(0.01, 0.05) * W
    velocity = direction * (0.05 * px_per_frame / px_per_5cm) * fps  # m/s
    wobble = rng.uniform(0, 0.04, 3) * (np.array([1, 1, 1]) if floating else np.array([1, 1, 0]))
    yaw_rate = np.radians(rng.uniform(-60, 60)) if kind == "cuboid" else 0.0
    solid = Solid(kind, p_mid - velocity * times[m], size, float(rng.uniform(-np.pi, np.pi)), mat, instance,
                  moving=True, velocity=velocity, yaw_rate=yaw_rate, wobble=wobble,
                  wobble_hz=rng.uniform(0.3, 1.0), wobble_phase=rng.uniform(0, 2 * np.pi))
    radius = solid.bounding_radius
    reach = float(np.hypot(size[0], size[1])) if kind == "cuboid" else float(size[0])
    for k, t in enumerate(times):
        c = solid.centre_at(t)
        uv, z = _project(K, poses[k], c)
        if not (0.05 * W <= uv[0] <= 0.95 * W and 0.05 * H <= uv[1] <= 0.95 * H and z > 0):
            return None
        if np.linalg.norm(poses[k][:3, 3] - c) < radius + 0.3:
            return None
        # inside the room: walls (bounding circle in plan), ceiling, floor (floor-standing solids touch it)
        if np.minimum(c[:2], room.size[:2] - c[:2]).min() < reach + 0.02:
            return None
        if c[2] + size[2] > room.size[2] - 0.05 or c[2] - size[2] < (0.05 if floating else -1e-6):
            return None
        if strict:
            if any(s.signed_distance(c) < radius for s in room.solids):
                return None
            if any(np.linalg.norm(o.centre_at(t) - c) < radius + o.bounding_radius for o in others):
                return None
    return solid


def make_sequence(seed: int, n_frames: int = 12, hw: Tuple[int, int] = (240, 320), n_moving: int = 2,
                  split: str = "heldout", fps: float = 10.0,
                  device: Union[str, torch.device] = "cpu") -> SyntheticSequence:
    """A camera sequence through a room with ``n_moving`` (0–3) independently moving solids.

    The camera path is smooth (robot: forward drive with gentle yaw; hand-held: low-frequency sway and
    rotation jitter) and redrawn while it stares at a near surface (> 25 % of a frame closer than 0.8 m,
    or median depth < 1.2 m). Each moving solid covers at least 1 % of the image (≥ 12 px) in every frame;
    the moving solids are redrawn deterministically from their own stream until they do. ``n_moving=0``
    gives the static twin (same room and path as any other ``n_moving`` for this seed).
    """
    if not 0 <= int(n_moving) <= 3:
        raise ValueError(f"n_moving must be in 0..3, got {n_moving}")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    device = torch.device(device)
    bank_cpu, bank = texture_bank(split), texture_bank_on(split, str(device))
    room_ss, path_ss, moving_ss = _seed_sequence(split, SEQUENCE_CODE, seed).spawn(3)
    rng_room = np.random.default_rng(room_ss)
    room = random_room(rng_room, bank_cpu.n_textures, bank_cpu.grey, int(rng_room.integers(2, 7)))
    K = intrinsics(hw, rng_room.uniform(55, 70))
    times = np.arange(n_frames) / float(fps)
    # Coarse depth probes (resolution-independent, 32 px wide) vet the camera path and place the movers.
    probe_hw = (max(2, int(round(32 * hw[0] / hw[1]))), 32)
    K_probe = K * np.array([[probe_hw[1] / hw[1]], [probe_hw[0] / hw[0]], [1.0]])
    rng_path = np.random.default_rng(path_ss)
    for _ in range(50):  # a path that does not stare at a surface within reach
        poses, style = smooth_path(rng_path, room, times)
        probe = _render_frames(room, poses, K_probe, times, probe_hw, bank, device)["depth"].cpu().numpy()
        near = (probe < 0.8).reshape(n_frames, -1).mean(1)
        if near.max() <= 0.25 and np.median(probe.reshape(n_frames, -1), 1).min() >= 1.2:
            break
    mid_depth = probe[n_frames // 2]
    n_static = len(room.solids)
    moving_ids = tuple(range(n_static + 1, n_static + 1 + int(n_moving)))
    min_px = max(12, int(np.ceil(MIN_MOVING_SHARE * hw[0] * hw[1])))
    rng_moving = np.random.default_rng(moving_ss)
    out = None
    for attempt in range(MAX_TRIES):
        movers: List[Solid] = []
        strict = attempt < MAX_TRIES // 2
        for inst in moving_ids:
            for _ in range(MAX_TRIES):
                s = _moving_solid(rng_moving, room, poses, K, times, fps, hw, inst, movers, strict, bank_cpu,
                                  mid_depth)
                if s is not None:
                    movers.append(s)
                    break
            else:
                break
        if len(movers) != len(moving_ids):
            continue
        full = Room(room.size, room.materials, room.light_dir, room.ambient, room.solids + movers)
        if hw[1] >= 128:  # cheap screening at a quarter of the resolution before the full render
            q_hw = (hw[0] // 4, hw[1] // 4)
            K_q = K * np.array([[q_hw[1] / hw[1]], [q_hw[0] / hw[0]], [1.0]])
            q_inst = _render_frames(full, poses, K_q, times, q_hw, bank, device)["instance"]
            if any((q_inst == i).flatten(1).sum(1).min().item() < 1.2 * min_px / 16 for i in moving_ids):
                continue
        out = _render_frames(full, poses, K, times, hw, bank, device)
        counts = [(out["instance"] == inst).flatten(1).sum(1).min().item() for inst in moving_ids]
        if all(c >= min_px for c in counts):
            room = full
            break
        out = None
    if out is None:
        raise RuntimeError(f"could not place {n_moving} visible moving solids (seed {seed})")  # not seen in tests
    rgb = _to_uint8(out["rgb"]).cpu().numpy()
    return SyntheticSequence(
        frames=[rgb[t] for t in range(n_frames)],
        depth=out["depth"].cpu().numpy().astype(np.float32),
        pointmaps=out["points_world"].cpu().numpy().astype(np.float32),
        cam_to_world=poses.astype(np.float64), K=K.astype(np.float64),
        stamps_ns=FIRST_STAMP_NS + np.round(np.arange(n_frames) * 1e9 / float(fps)).astype(np.int64),
        instances=out["instance"].cpu().numpy().astype(np.int32),
        dynamic=out["dynamic"].cpu().numpy().astype(bool),
        seed=int(seed), split=split, n_moving=int(n_moving), fps=float(fps), moving_ids=moving_ids,
        camera_style=style, extra={"room": room})


def _render_frames(room: Room, poses: np.ndarray, K: np.ndarray, times: np.ndarray, hw, bank,
                   device) -> Dict[str, torch.Tensor]:
    return _render_batch([room.at(float(t)) for t in times], poses, np.stack([K] * len(times)), hw, bank, device)


def write_sequence(seq: SyntheticSequence, out_dir: PathLike) -> Path:
    """Write ``rgb/000000.png``…, ``masks/000000.png`` (0/255 ground-truth dynamic), ``depth/000000.npy``
    (float32 z, m), ``poses_tum.txt`` (camera-to-world, TUM ``t x y z qx qy qz qw``, t in s),
    ``intrinsics.json`` ({fx, fy, cx, cy, width, height, K}) and ``meta.json`` (seed, split, n_moving, fps,
    moving ids, camera style). Returns the folder."""
    import json

    import cv2

    from ..io.writers import write_depth, write_intrinsics, write_mask_png, write_tum
    out = Path(out_dir)
    (out / "rgb").mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(seq.frames):
        if not cv2.imwrite(str(out / "rgb" / f"{t:06d}.png"), np.ascontiguousarray(frame[:, :, ::-1])):
            raise OSError(f"cannot write {out / 'rgb' / f'{t:06d}.png'}")
        write_mask_png(out / "masks" / f"{t:06d}.png", seq.dynamic[t])
        write_depth(out / "depth" / f"{t:06d}.npy", seq.depth[t])
    write_tum(out / "poses_tum.txt", [int(s) for s in seq.stamps_ns], list(seq.cam_to_world))
    H, W = seq.depth.shape[1:]
    write_intrinsics(out / "intrinsics.json", seq.K, W, H)
    meta = {"seed": seq.seed, "split": seq.split, "n_moving": seq.n_moving, "fps": seq.fps,
            "moving_ids": list(seq.moving_ids), "camera_style": seq.camera_style, "n_frames": len(seq)}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out
