"""Easi3R on one window of frames: encode -> pass 1 -> masks -> pass 2 -> final masks -> global alignment.

Work that depends only on frames is cached by frame id and reused by overlapping windows: each frame is
encoded once, and each ordered pair's pass-1 attention maps are decoded once. Pass 2 depends on the
window's masks: with ``reuse_pass2`` a pair whose two frames' token masks are those of the previous
window's decode of it is taken from that decode (identical inputs, identical outputs), the rest are
decoded again. With ``align_coarse`` > 1 the global alignment runs on every align_coarse-th pixel, then
solves the full-resolution depths in closed form (coarse to fine); with ``warm_start`` the alignment of a
window that shares frames with the previous one starts from the previous solution on those frames and stops
early once its loss stops improving (:class:`~easi3r_ros.align.global_alignment.WarmStart`). The reference
preset does none of these.

GPU. Pairs are decoded ``pair_batch`` at a time (0: 1 on the CPU, 8 on CUDA) under autocast
(``precision`` bf16/fp16 on CUDA; bf16 also on the CPU; the encoder, run once per frame, and the decoder's
cross-attention, whose logits are the motion signal, stay fp32, or the whole decoder: ``keep_fp32``), images
go to the device from pinned memory with non-blocking copies, and attention runs torch's fused ``scaled_dot_product_attention`` (flash / memory-
efficient kernels on CUDA); fp32 there is IEEE fp32 (TF32 off) and the alignment's steps are replayed
from a CUDA graph (``cuda_graphs``). A batch that runs out of GPU memory is retried at half the size (the smaller
size is kept for later windows); out of memory at one pair per batch, the window fails with
:class:`WindowOutOfMemory` (the stream counts it as failed and goes on).
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence

import cv2
import numpy as np
import torch

from ..align.global_alignment import WarmStart, align_window
from ..io.camera_model import CameraModel
from ..model.blocks import Reweighting
from ..model.config import check_keep_fp32
from ..model.network import Dust3rNetwork
from ..model.preprocess import CropInfo, preprocess_image
from ..motion.guard import LEVEL_THRESHOLD, MotionGuard
from ..motion.masks import window_masks
from .result import FrameResult, WindowResult
from .scene_graph import make_edges

log = logging.getLogger(__name__)

def edge_flows(images: torch.Tensor, edges: np.ndarray, dynamic: np.ndarray) -> dict:
    """The alignment's flow input (see :mod:`easi3r_ros.align.flow`): DIS optical flow i -> j and j -> i of
    every edge on the network's images (normalised to [-1, 1]), with the frames' dynamic masks."""
    from ..motion.flow_baseline import dense_flow
    grey = [cv2.cvtColor(((im.permute(1, 2, 0).cpu().numpy() * 0.5 + 0.5).clip(0, 1) * 255).astype(np.uint8),
                         cv2.COLOR_RGB2GRAY) for im in images]
    fw = [dense_flow(grey[i], grey[j]) for i, j in edges.tolist()]
    bw = [dense_flow(grey[j], grey[i]) for i, j in edges.tolist()]
    as_chw = lambda fl: np.stack(fl).transpose(0, 3, 1, 2).astype(np.float32)  # noqa: E731
    return {"flow_ij": as_chw(fw), "flow_ji": as_chw(bw), "dynamic_masks": np.asarray(dynamic, bool)}


class WindowCancelled(RuntimeError):
    """The window was abandoned because its owner is shutting down (``WindowPipeline.should_stop``)."""


class WindowError(ValueError):
    """A window that cannot be processed (too few frames, mixed sizes...)."""


class WindowOutOfMemory(WindowError):
    """The window did not fit in the device's memory, even one pair at a time."""


def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


@dataclass(frozen=True)
class WindowConfig:
    """Pipeline settings. The defaults are the reference preset (the original Easi3R demo)."""

    image_size: Optional[int] = None          # 224 or 512; None: the model's own size
    scene_graph: str = "swinstride-5"
    kmeans_clusters: int = 64
    kmeans: str = "sklearn"                   # "sklearn" (reference) or "torch" (faster; on CUDA its k-means++
                                              # start is drawn on the GPU too)
    niter: int = 300                          # global-alignment iterations
    align_coarse: int = 1                     # > 1: the alignment runs on every align_coarse-th pixel, then the
                                              # full-resolution depths are solved in closed form (robot preset:
                                              # 4; 1: every pixel, as the reference; see align.global_alignment)
    align_polish: int = 0                     # with align_coarse > 1: full-resolution Adam steps after that
    lr: float = 0.01
    lr_min: float = 1e-3
    pnp_conf_threshold: float = 2.5
    # robot: a frame with < 1 % of its pixels above pnp_conf_threshold (a model whose confidences sit lower)
    # is posed by PnP on its pixels above this confidence quantile; the reference leaves it at identity, where
    # its translation cannot move (the storage transform's gradient is zero at 0)
    pnp_conf_quantile: Optional[float] = None
    static_conf_threshold: float = 3.0        # confidence above which static pixels become cloud points
    motion_guard: bool = False                # robot preset: empty masks when nothing moves
    motion_guard_level: float = LEVEL_THRESHOLD   # evidence-level threshold (motion.guard)
    motion_guard_contrast: Optional[float] = None  # sigma-contrast threshold; calibrate on real weights
    device: str = "auto"                      # "auto" -> cuda when available, else cpu
    precision: str = "fp32"                   # "fp32", or "bf16"/"fp16" autocast on CUDA
    keep_fp32: str = "cross-attention"        # bf16/fp16: what stays fp32 besides the encoder: "cross-attention"
                                              # (Easi3R's signal), "decoder" (only the heads reduced: masks as
                                              # fp32's) or "nothing" (Dust3rNetwork.decode, benchmarks/precision.py)
    pair_batch: int = 0                       # ordered pairs per decoder call; 0: 1 on CPU, 8 on CUDA
    cuda_graphs: bool = True                  # CUDA: alignment steps replayed from one CUDA graph
    keep_arrays: bool = False                 # fill WindowResult.arrays (fixture-named, for results.npz)
    flow_loss: bool = False                   # the reference's optional optical-flow term in the alignment, with
                                              # DIS flow (OpenCV) between each edge's images on static pixels
    reweight: bool = True                     # False: pass 2 without re-weighting (plain DUSt3R pointmaps
                                              # and alignment; the masks are then pass 1's) — for ablations
    # streaming (robot preset; the reference recomputes everything and runs niter cold iterations)
    reuse_pass2: bool = False                 # reuse a pair's pass-2 decode when its frames' token masks are
                                              # unchanged since the previous window (exact)
    warm_start: bool = False                  # alignment starts from the previous window's solution on the
                                              # shared frames, with an early stop (below)
    warm_niter: int = 300                     # iteration cap of a warm-started alignment
    warm_lr: float = 0.01                     # its starting learning rate (linear to lr_min over warm_niter),
    warm_lr_warmup: int = 10                  # reached linearly over this many first steps (Adam's first
                                              # steps would otherwise kick the converged frames)
    early_stop_patience: int = 10             # warm: stop when the loss improved by less than early_stop_rel
    early_stop_rel: float = 0.01              #   (relative) over the last early_stop_patience iterations


PRESETS = {
    "reference": WindowConfig(),
    # align_coarse 4 with 150 iterations: the final loss 0.6-0.9 % above the full-resolution alignment's (300
    # coarse iterations: 0.1 % below), streamed ATE and masks unchanged, alignment a quarter cheaper; single cold
    # windows' ATE +3.3 % (README, quality). warm_start stays opt-in: it starts barely closer and its early stop
    # ends 12-14 % higher (benchmarks/results/streaming)
    "robot": WindowConfig(motion_guard=True, pnp_conf_quantile=0.5, reuse_pass2=True, align_coarse=4, niter=150),
}


def preset_config(name: str, **overrides) -> WindowConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (expected one of {', '.join(PRESETS)})")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


def _ieee_fp32_on_cuda() -> None:
    """fp32 on CUDA means IEEE fp32: cuDNN convolutions (the DPT head) default to TF32, whose 10-bit
    mantissa moves outputs by ~1e-3, outside the fixture tolerances. Process-wide, as torch keeps it."""
    try:
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        torch.backends.cudnn.conv.fp32_precision = "ieee"
    except AttributeError:  # torch < 2.9
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


@dataclass
class _Encoded:
    image: torch.Tensor        # (3, H, W) network input in [-1, 1]
    tokens: torch.Tensor       # (N, C) encoder output
    crop: CropInfo


class _LRU(OrderedDict):
    """A small bounded cache; ``retain`` drops entries no longer needed by the sliding window."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


@dataclass
class CacheStats:
    """Work done and reused, summed over windows (the stream reports them as its ``cache`` counters)."""

    encoded: int = 0
    encodings_reused: int = 0
    pairs_decoded: int = 0          # pass 1
    pairs_reused: int = 0           # pass 1
    pass2_decoded: int = 0
    pass2_reused: int = 0
    align_iterations: int = 0
    windows_warm: int = 0           # alignments warm-started from the previous window
    windows_graphed: int = 0        # alignments whose steps were replayed from a CUDA graph
    oom_retries: int = 0            # batches retried at half size after running out of device memory


class WindowPipeline:
    """Runs Easi3R on windows of frames with one network; reuses work between overlapping windows."""

    def __init__(self, network: Dust3rNetwork, config: WindowConfig = WindowConfig(), cache_frames: int = 64,
                 progress: Optional[Callable[..., Any]] = None):
        """``progress``: a tqdm-like factory ``progress(total=, desc=)`` for progress bars (None: silent)."""
        check_keep_fp32(config.keep_fp32)
        self.config = config
        self.progress = progress
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and config.precision == "fp32":
            _ieee_fp32_on_cuda()
        self.network = network.to(self.device).eval()
        self.image_size = config.image_size or network.cfg.image_size
        self.guard = MotionGuard(
            level_threshold=config.motion_guard_level if config.motion_guard else None,
            contrast_threshold=config.motion_guard_contrast if config.motion_guard else None)
        self._encodings: _LRU = _LRU(cache_frames)
        self._pass1: _LRU = _LRU(cache_frames * 20)
        # pass-2 decodes of the last window, by (id_i, id_j, token-mask key i, key j): at most one window's edges
        self._pass2: Dict[tuple, tuple] = {}
        # the last window's alignment per frame id: (pose c2w, world points); at most one window's frames
        self._solution: Dict[Hashable, tuple] = {}
        self._solution_meta: Optional[tuple] = None   # (focal, hw, calibrated)
        self._batch_cap: Optional[int] = None         # lowered after running out of device memory
        self.stats = CacheStats()
        # Polled between stages, pair batches and alignment iterations: a shutdown need not wait for
        # a whole window (torch kernels cannot be interrupted, these points can).
        self.should_stop: Callable[[], bool] = lambda: False

    def _check_stop(self) -> None:
        if self.should_stop():
            raise WindowCancelled("window abandoned: shutting down")

    # ------------------------------------------------------------------ helpers
    def _autocast(self):
        precision = self.config.precision
        if self.device.type == "cuda" and precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        if self.device.type == "cpu" and precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    def _pair_batch(self) -> int:
        bsz = self.config.pair_batch or (8 if self.device.type == "cuda" else 1)
        return bsz if self._batch_cap is None else max(1, min(bsz, self._batch_cap))

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device)

    def _free_device_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def reset(self) -> None:
        """Forget cached encodings, pair decodes and the last solution (e.g. after a time jump in the stream)."""
        self._encodings.clear()
        self._pass1.clear()
        self._pass2.clear()
        self._solution.clear()
        self._solution_meta = None

    def _encode(self, frames: Sequence[np.ndarray], ids: Sequence[Hashable],
                camera: Optional[CameraModel] = None) -> List[_Encoded]:
        todo = [k for k, fid in enumerate(ids) if fid not in self._encodings]
        self.stats.encodings_reused += len(ids) - len(todo)
        if todo:
            undistort = camera.undistort if camera is not None else (lambda rgb: rgb)
            prepared = [preprocess_image(undistort(frames[k]), self.image_size) for k in todo]
            images = self._to_device(torch.stack([t for t, _ in prepared]))
            # fp32 whatever the precision: each frame is encoded once, and its features drive the clustering
            # (bf16 encoder features change most k-means labels of a random-weight fixture)
            tokens = self._batched(lambda a, b: self.network.encode(images[a:b]).float(), len(todo),
                                   min(8, self._batch_cap or 8), reduced=False)
            for k, (img, crop), tok in zip(todo, prepared, tokens.float()):
                self._encodings.put(ids[k], _Encoded(img.to(self.device), tok, crop))
            self.stats.encoded += len(todo)
        encoded = [self._encodings[fid] for fid in ids]
        for fid in ids:
            self._encodings.move_to_end(fid)
        return encoded

    def _bar(self, total: int, desc: str):
        return self.progress(total=total, desc=desc) if self.progress else contextlib.nullcontext()

    def _batched(self, fn, total: int, bsz: int, bar=None, reduced: bool = True):
        """``fn(a, b)`` over [0, total) in batches of ``bsz`` under no_grad and autocast. A batch that runs
        out of device memory is retried at half the size, which is kept as the cap for later calls; at one
        item per batch :class:`WindowOutOfMemory` is raised. Returns the concatenated outputs (a tensor, or a
        dict of tensors when ``fn`` returns dicts). ``reduced=False``: fp32 whatever the precision."""
        parts, a = [], 0
        cast = self._autocast() if reduced else torch.autocast(self.device.type, enabled=False)
        with torch.no_grad(), cast:
            while a < total:
                self._check_stop()
                b = min(a + bsz, total)
                try:
                    parts.append(fn(a, b))
                except Exception as exc:
                    if not _is_oom(exc):
                        raise
                    self._free_device_memory()
                    if b - a <= 1:
                        raise WindowOutOfMemory(f"out of {self.device} memory at one item per batch: {exc}") from None
                    bsz = max(1, (b - a) // 2)
                    self._batch_cap = bsz
                    self.stats.oom_retries += 1
                    log.warning("out of %s memory with batches of %d: retrying with %d", self.device, b - a, bsz)
                    continue
                if bar is not None:
                    bar.update(b - a)
                a = b
        if parts and isinstance(parts[0], dict):
            return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        return torch.cat(parts)

    def _decode(self, enc: torch.Tensor, edges: np.ndarray, hw, *, reweight_static: Optional[torch.Tensor],
                heads: bool, desc: str):
        """Batched decode of the given ordered edges; returns per-edge tensors on the device."""
        keys = ("attn1", "attn2", "pts1", "conf1", "pts2", "conf2")
        edges_t = torch.as_tensor(np.asarray(edges, np.int64).reshape(-1, 2), device=self.device)

        def one(a, b):
            ii, jj = edges_t[a:b, 0], edges_t[a:b, 1]
            rw = None if reweight_static is None else Reweighting(reweight_static[ii], reweight_static[jj])
            pred = self.network.decode(enc[ii], enc[jj], hw, attention_stats=True, reweight=rw, heads=heads,
                                       keep_fp32=self.config.keep_fp32)
            return {k: getattr(pred, k).float() for k in keys if getattr(pred, k) is not None}

        with self._bar(len(edges), desc) as bar:
            return self._batched(one, len(edges), self._pair_batch(), bar)

    # ------------------------------------------------------------------ the window
    def run(self, frames: Sequence[np.ndarray], stamps_ns: Optional[Sequence[Optional[int]]] = None,
            frame_ids: Optional[Sequence[Hashable]] = None, flow: Optional[dict] = None,
            camera: Optional[CameraModel] = None) -> WindowResult:
        """Easi3R on ``frames`` (each (H0, W0, 3) uint8 RGB, one size).

        ``frame_ids`` identify frames across calls (e.g. a stream counter); frames seen before reuse their
        encoding and pass-1 pair decodes. Without ids nothing is reused. ``flow`` is passed to the global
        alignment (see :func:`align_window`). ``camera``: the calibration of these frames; the network then
        sees undistorted images, the alignment holds the calibrated intrinsics fixed, and masks and depth
        are mapped back onto the images as received. Without it one focal is estimated per window.
        """
        cfg = self.config
        n = len(frames)
        if n < 3:
            raise WindowError(f"a window needs at least 3 frames (got {n}): every frame needs two partners")
        shapes = {tuple(np.shape(f)) for f in frames}
        if len(shapes) != 1:
            raise WindowError(f"frames of mixed sizes in one window: {sorted(shapes)}")
        if camera is not None:
            camera.check_image(*np.shape(frames[0])[:2])
        stamps = list(stamps_ns) if stamps_ns is not None else [None] * n
        ids = list(frame_ids) if frame_ids is not None else [("anon", id(self), time.monotonic_ns(), k) for k in range(n)]
        timings: Dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name):
            nonlocal clock
            now = time.perf_counter()
            timings[name] = now - clock
            clock = now
            self._check_stop()

        edges = make_edges(cfg.scene_graph, n)
        encoded = self._encode(frames, ids, camera)
        enc = torch.stack([e.tokens for e in encoded])
        images = torch.stack([e.image for e in encoded])
        hw = tuple(images.shape[-2:])
        grid = self.network.token_grid(hw)
        lap("encode_s")

        # pass 1: attention statistics only (no heads), cached per ordered pair of frames
        keys = [(ids[i], ids[j]) for i, j in edges.tolist()]
        missing = np.array([e for e, key in zip(edges.tolist(), keys) if key not in self._pass1], dtype=np.int64).reshape(-1, 2)
        if len(missing):
            dec = self._decode(enc, missing, hw, reweight_static=None, heads=False, desc="pass 1 pairs")
            for (i, j), a1, a2 in zip(missing.tolist(), dec["attn1"], dec["attn2"]):
                self._pass1.put((ids[i], ids[j]), (a1, a2))
        self.stats.pairs_decoded += len(missing)
        self.stats.pairs_reused += len(edges) - len(missing)
        attn1_p1 = torch.stack([self._pass1[k][0] for k in keys])
        attn2_p1 = torch.stack([self._pass1[k][1] for k in keys])
        lap("pass1_s")

        feat = enc.reshape(n, grid[0], grid[1], -1)
        masks1 = window_masks(attn1_p1, attn2_p1, edges, feat, hw, n_frames=n, n_clusters=cfg.kmeans_clusters,
                              kmeans=cfg.kmeans, device=self.device, guard=self.guard, prefix="pass1_")
        lap("masks1_s")

        # pass 2: branch-1 cross-attention re-weighted by the pass-1 masks; heads for the alignment.
        # A window the guard judges static has empty masks, which re-weight nothing.
        static_tokens = None
        if masks1.masks.any() and cfg.reweight:
            static_tokens = ~torch.as_tensor(masks1.token_masks, device=self.device).reshape(n, -1)
        dec2 = self._pass2_decode(enc, edges, hw, ids, static_tokens, masks1.token_masks)
        lap("pass2_s")

        # the encoder tokens are identical in both passes, so the clustering is too
        masks2 = window_masks(dec2["attn1"], dec2["attn2"], edges, None, hw, n_frames=n, labels=masks1.seg.labels,
                              prefix="pass2_")
        masks = masks2.masks if masks1.moving else np.zeros_like(masks2.masks)
        if flow is None and cfg.flow_loss:
            flow = edge_flows(images, edges, masks)
        lap("masks2_s")

        warm = self._warm_start(ids, hw, camera is not None) if frame_ids is not None else None
        niter, lr = (cfg.warm_niter, cfg.warm_lr) if warm is not None else (cfg.niter, cfg.lr)
        with self._bar(niter, "alignment") as bar:
            aligned = align_window(dec2["pts1"], dec2["conf1"], dec2["pts2"], dec2["conf2"], edges, n,
                                   niter=niter, lr=lr, lr_min=cfg.lr_min, flow=flow,
                                   device=self.device, min_conf_thr=cfg.pnp_conf_threshold,
                                   pnp_conf_quantile=cfg.pnp_conf_quantile,
                                   intrinsics=None if camera is None else camera.network_intrinsics(encoded[0].crop),
                                   callback=lambda it, loss: (self._check_stop(), bar and bar.update(1)),
                                   warm=warm, patience=cfg.early_stop_patience if warm is not None else 0,
                                   rel_tol=cfg.early_stop_rel, warmup=cfg.warm_lr_warmup if warm is not None else 0,
                                   cuda_graph=cfg.cuda_graphs, coarse=cfg.align_coarse, polish=cfg.align_polish,
                                   clean=False)  # conf_clean: not an output here
        self.stats.align_iterations += aligned.iterations
        self.stats.windows_warm += warm is not None
        self.stats.windows_graphed += aligned.optimizer == "cuda-graph"
        if cfg.warm_start and frame_ids is not None:
            self._solution = {fid: (aligned.poses_c2w[k], aligned.pts3d[k]) for k, fid in enumerate(ids)}
            self._solution_meta = (float(aligned.focal), hw, camera is not None)
        lap("align_s")

        colors = ((images.permute(0, 2, 3, 1).cpu().numpy() * 0.5 + 0.5).clip(0, 1) * 255).round().astype(np.uint8)
        frames_out = []
        to_raw = camera.to_raw if camera is not None else (lambda image, fill=0.0: image)
        for k in range(n):
            crop = encoded[k].crop
            keep = ~masks[k] & (aligned.conf[k] > cfg.static_conf_threshold)
            frames_out.append(FrameResult(
                index=k, stamp_ns=stamps[k], mask=masks[k], mask_camera=to_raw(crop.mask_to_camera(masks[k])),
                cam_to_world=aligned.poses_c2w[k].astype(np.float64),
                intrinsics=aligned.intrinsics[k].astype(np.float64),
                intrinsics_camera=camera.K if camera is not None else crop.intrinsics_to_camera(aligned.intrinsics[k]),
                depth=aligned.depths[k], depth_camera=to_raw(crop.depth_to_camera(aligned.depths[k]), fill=np.nan),
                confidence=aligned.conf[k],
                static_points=aligned.pts3d[k][keep].astype(np.float32), static_colors=colors[k][keep]))
        lap("outputs_s")
        timings["total_s"] = sum(timings.values())

        result = WindowResult(frames=frames_out, focal=float(aligned.focal), edges=edges, moving=masks1.moving,
                              motion_score=masks1.stats["evidence_level"],
                              otsu_threshold=float(masks2.seg.threshold), timings=timings,
                              align_loss=float(aligned.final_loss), align_iterations=aligned.iterations,
                              align_warm=bool(aligned.warm_frames), align_loss_curve=aligned.loss_curve[:, 0].copy())
        if cfg.keep_arrays:
            result.arrays = self._arrays(images, feat, edges, (attn1_p1, attn2_p1), dec2, masks1, masks2,
                                         aligned, masks)
        if frame_ids is None:  # anonymous frames cannot be met again
            for fid in ids:
                self._encodings.pop(fid, None)
        self._drop_stale_pairs()
        return result

    def _pass2_decode(self, enc: torch.Tensor, edges: np.ndarray, hw, ids: Sequence[Hashable],
                      static_tokens: Optional[torch.Tensor], token_masks: np.ndarray) -> Dict[str, torch.Tensor]:
        """Pass 2 of every edge; with ``reuse_pass2``, pairs decoded by the previous window with the same two
        frames and the same re-weighting (token masks) are taken from that decode."""
        if not self.config.reuse_pass2:
            self.stats.pass2_decoded += len(edges)
            return self._decode(enc, edges, hw, reweight_static=static_tokens, heads=True, desc="pass 2 pairs")
        n = len(ids)
        if static_tokens is None:
            mkeys = [None] * n
        else:
            flat = np.asarray(token_masks, bool).reshape(n, -1)
            mkeys = [np.packbits(flat[k]).tobytes() for k in range(n)]
        keys = [(ids[i], ids[j], mkeys[i], mkeys[j]) for i, j in edges.tolist()]
        missing = [e for e, key in enumerate(keys) if key not in self._pass2]
        fresh = {}
        if missing:
            fresh = self._decode(enc, edges[missing], hw, reweight_static=static_tokens, heads=True,
                                 desc="pass 2 pairs")
        slot = {e: r for r, e in enumerate(missing)}
        out: Dict[str, List[torch.Tensor]] = {}
        names = ("attn1", "attn2", "pts1", "conf1", "pts2", "conf2")
        for e, key in enumerate(keys):
            row = tuple(fresh[k][slot[e]] for k in names) if e in slot else self._pass2[key]
            for k, v in zip(names, row):
                out.setdefault(k, []).append(v)
        # keep this window's decodes only: the next window can reuse nothing older
        self._pass2 = {key: tuple(out[k][e] for k in names) for e, key in enumerate(keys)}
        self.stats.pass2_decoded += len(missing)
        self.stats.pass2_reused += len(edges) - len(missing)
        return {k: torch.stack(v) for k, v in out.items()}

    def _warm_start(self, ids: Sequence[Hashable], hw, calibrated: bool) -> Optional[WarmStart]:
        """The previous window's solution on the frames this window shares with it (None: a cold start)."""
        if not self.config.warm_start or self._solution_meta is None:
            return None
        focal, prev_hw, prev_calibrated = self._solution_meta
        if tuple(prev_hw) != tuple(hw) or prev_calibrated != calibrated:
            return None
        shared = [k for k, fid in enumerate(ids) if fid in self._solution]
        if len(shared) < 2:
            return None
        return WarmStart(frames=shared, poses_c2w=np.stack([self._solution[ids[k]][0] for k in shared]),
                         pts3d=np.stack([self._solution[ids[k]][1] for k in shared]), focal=focal)

    def _drop_stale_pairs(self) -> None:
        """Drop pass-1 pair decodes that involve frames no longer cached."""
        alive = set(self._encodings)
        for key in [k for k in self._pass1 if k[0] not in alive or k[1] not in alive]:
            del self._pass1[key]

    @staticmethod
    def _arrays(images, feat, edges, pass1_maps, dec2, masks1, masks2, aligned, masks) -> Dict[str, np.ndarray]:
        """Fixture-named arrays (see the reference fixtures' README) for results.npz."""
        n, _, h, w = images.shape
        arrays = {
            "input_imgs": images.cpu().numpy(), "true_shape": np.tile(np.int32([h, w]), (n, 1)),
            "edges": edges.astype(np.int64), "encoder_feat": feat.cpu().numpy(),
            "pass1_cross_atten_maps_k_view1": pass1_maps[0].cpu().numpy(),
            "pass1_cross_atten_maps_k_view2": pass1_maps[1].cpu().numpy(),
            "pass2_cross_atten_maps_k_view1": dec2["attn1"].cpu().numpy(),
            "pass2_cross_atten_maps_k_view2": dec2["attn2"].cpu().numpy(),
            "pass2_pred1_pts3d": dec2["pts1"].cpu().numpy(), "pass2_pred1_conf": dec2["conf1"].cpu().numpy(),
            "pass2_pred2_pts3d_in_other_view": dec2["pts2"].cpu().numpy(),
            "pass2_pred2_conf": dec2["conf2"].cpu().numpy(),
            "conf": aligned.conf, "init_poses_c2w": aligned.init_poses_c2w,
            "init_focals": np.full(n, aligned.init_focal, np.float32), "init_depths": aligned.init_depths,
            "init_loss": np.float64(aligned.init_loss), "ga_loss_curve": aligned.loss_curve,
            "final_loss": np.float64(aligned.final_loss), "poses_c2w": aligned.poses_c2w,
            "focals": aligned.focals, "intrinsics": aligned.intrinsics, "depths": aligned.depths,
            "dynamic_masks": masks,
        }
        arrays.update(masks1.arrays())
        arrays.update(masks2.arrays())
        return arrays
