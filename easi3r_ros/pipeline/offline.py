"""Offline runs: a video, image folder or bag through the window pipeline, written to a folder.

Outputs (camera resolution unless noted): ``masks/<frame>.png`` (0/255), ``overlay.mp4``,
``poses_tum.txt`` (camera-to-world, TUM format), ``intrinsics.json``, ``depth/<frame>.npy`` (network
resolution), ``static_cloud.ply`` and ``results.npz`` (array names as in the reference fixtures).

Known intrinsics (``camera``) are held fixed by the alignment. A metric scale comes from the robot's odometry
(``odometry(stamp_ns) -> 4x4`` camera pose in the odometry frame: the trajectory is then expressed in that
frame, in metres) or is given (``fixed_scale``); either runs the frames through the stream's chaining, one
window or several, which owns the scale estimate. The scale reached is recorded in ``run_info.json``.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np

from ..io.camera_model import CameraModel
from ..io.frames import IMAGE_EXTENSIONS, Frame, InputError, check_same_size
from ..io.writers import (OverlayVideoWriter, write_depth, write_mask_png, write_ply, write_results_npz,
                          write_tum)
from .metric_scale import METRIC_STATES
from .result import FrameResult
from .scheduler import StreamConfig
from .stream import PublishedFrame, StreamProcessor, StreamSink, WindowOutput
from .world import transform_points
from .window import WindowPipeline

RANDOM_WEIGHTS_WARNING = ("RANDOM WEIGHTS (smoke test): the network is untrained, so masks, poses and points "
                          "are meaningless. Pass --checkpoint with official DUSt3R/MonST3R weights for real results.")


@dataclass
class RunSummary:
    frames: int = 0
    windows: int = 0
    seconds: float = 0.0
    timings: Dict[str, float] = field(default_factory=dict)
    random_weights: bool = False
    outputs: List[str] = field(default_factory=list)
    scale: Optional[dict] = None   # the last window's scale estimate (value, spread, source, state, pairs)


def frame_name(frame: Frame) -> str:
    """The image file's stem for image folders, ``frame_<index>`` for videos and bags."""
    source = Path(frame.source or "")
    return source.stem if source.suffix.lower() in IMAGE_EXTENSIONS else f"frame_{frame.index:06d}"


class RunWriter:
    """Writes per-frame results as they become final, and the window-level files at the end."""

    def __init__(self, out_dir: Path, meta: dict, overlay: bool = True):
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.meta = meta
        self._video = OverlayVideoWriter(self.out / "overlay.mp4", fps=meta.get("fps") or 10.0) if overlay else None
        self._stamps: List[int] = []
        self._poses: List[np.ndarray] = []
        self._intrinsics: List[dict] = []
        self._points: List[np.ndarray] = []
        self._colors: List[np.ndarray] = []

    def frame(self, frame: Frame, result: FrameResult) -> None:
        name = frame_name(frame)
        write_mask_png(self.out / "masks" / f"{name}.png", result.mask_camera)
        write_depth(self.out / "depth" / f"{name}.npy", result.depth)
        if self._video is not None:
            self._video.write(frame.rgb, result.mask_camera)
        self._stamps.append(frame.stamp_ns)
        self._poses.append(result.cam_to_world)
        h0, w0 = result.mask_camera.shape
        self._intrinsics.append({"frame": name, "stamp_ns": int(frame.stamp_ns), "width": w0, "height": h0,
                                 "K": result.intrinsics_camera.tolist(),
                                 "K_network": result.intrinsics.tolist(),
                                 "dynamic_ratio": result.dynamic_ratio})
        self._points.append(result.static_points)
        self._colors.append(result.static_colors)

    def close(self, arrays: Dict[str, np.ndarray]) -> List[str]:
        if self._video is not None:
            self._video.close()
        write_tum(self.out / "poses_tum.txt", self._stamps, self._poses)
        (self.out / "intrinsics.json").write_text(json.dumps({"frames": self._intrinsics, **self.meta}, indent=1))
        write_ply(self.out / "static_cloud.ply", np.concatenate(self._points) if self._points else np.zeros((0, 3)),
                  np.concatenate(self._colors) if self._colors else np.zeros((0, 3), np.uint8))
        write_results_npz(self.out / "results.npz", arrays, self.meta)
        (self.out / "run_info.json").write_text(json.dumps(self.meta, indent=1, default=str))
        return sorted(str(p.relative_to(self.out)) for p in self.out.iterdir())


def scale_source_of(odometry: Optional[Callable], fixed_scale: Optional[float]) -> str:
    return "odometry" if odometry is not None else "fixed" if fixed_scale is not None else "none"


def run_offline(frames: Iterable[Frame], pipeline: WindowPipeline, out_dir: Path, meta: dict,
                window: int = 0, stride: int = 0, camera: Optional[CameraModel] = None,
                odometry: Optional[Callable[[int], Optional[np.ndarray]]] = None,
                fixed_scale: Optional[float] = None) -> RunSummary:
    """Process ``frames`` and write everything to ``out_dir``.

    ``window == 0`` processes all frames as one window (the reference's behaviour). Otherwise sliding
    windows of ``window`` frames every ``stride`` frames are chained into one trajectory. ``camera``: known
    intrinsics of the source images; ``odometry`` or ``fixed_scale``: a metric scale (see the module).
    """
    frames = list(frames)
    if not frames:
        raise InputError("no frames to process")
    check_same_size(frames)
    summary = RunSummary(frames=len(frames), random_weights=bool(meta.get("random_weights")))
    writer = RunWriter(out_dir, meta)
    source = scale_source_of(odometry, fixed_scale)
    if source != "none" or (window and window < len(frames)):
        config = sliding_config(len(frames), window if window and window < len(frames) else len(frames), stride,
                                scale_source=source, fixed_scale=fixed_scale)
        results, arrays, timings, n_windows, scales = run_windows(pipeline, frames, config, camera, odometry)
        summary.scale = scales[-1] if scales else None
        meta["scale"] = {"source": source, "final": summary.scale, "windows": scales}
    else:
        result = pipeline.run([f.rgb for f in frames], [f.stamp_ns for f in frames],
                              frame_ids=list(range(len(frames))), camera=camera)
        results, arrays, timings, n_windows = result.frames, result.arrays, result.timings, 1
        meta["scale"] = {"source": "none"}
    meta["units"] = "m" if scale_is_metric(summary.scale) else "first window's (free monocular scale)"
    for frame, res in zip(frames, results):
        writer.frame(frame, res)
    summary.outputs = writer.close(arrays)
    summary.windows = n_windows
    summary.timings = timings
    summary.seconds = float(timings["total_s"])
    return summary


def scale_is_metric(scale: Optional[dict]) -> bool:
    """Whether a recorded scale estimate (see :class:`.metric_scale.ScaleEstimate`) puts the outputs in metres."""
    return bool(scale) and scale.get("state") in METRIC_STATES


class _Collector(StreamSink):
    """Keeps what the stream publishes: each frame once, with its pose chained onto one trajectory."""

    def __init__(self):
        self.published: Dict[int, PublishedFrame] = {}
        self.dropped: List[str] = []
        self.windows = 0
        self.scales: List[dict] = []
        self.timings: Dict[str, float] = defaultdict(float)

    def on_window(self, out: WindowOutput) -> None:
        if out.result is not None:
            self.windows += 1
            for key, value in out.result.timings.items():
                self.timings[key] += value
            self.scales.append({"window": out.window_id, **_as_dict(out.scale)})
        for pub in out.published:
            self.published[pub.frame.seq] = pub

    def on_dropped(self, frames, reason: str) -> None:
        self.dropped += [f"{f.frame_id}: {reason}" for f in frames]


def _as_dict(scale) -> dict:
    """A ScaleEstimate as JSON-ready numbers and strings."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in asdict(scale).items()}


def _in_trajectory(pub: PublishedFrame) -> FrameResult:
    """The frame's result moved from its window's world onto the chained trajectory (and its scale)."""
    res = pub.result
    points = transform_points(pub.to_world, res.static_points).astype(np.float32)
    return replace(res, cam_to_world=pub.world_T_cam, depth=res.depth * np.float32(pub.depth_scale),
                   static_points=points)


def sliding_config(n_frames: int, window: int, stride: int = 0, **scale) -> StreamConfig:
    """The validated stream configuration of an offline run over ``n_frames`` in windows of ``window``
    frames every ``stride`` (0: half a window); ``scale``: ``scale_source`` / ``fixed_scale``. Raises
    StreamConfigError."""
    scale = {k: v for k, v in scale.items() if v is not None}
    return StreamConfig(window_size=window, stride=stride or max(1, window // 2), queue_limit=n_frames + window,
                        cloud_voxel_size=0.0, odom_T_world=tuple(map(tuple, np.eye(4))), **scale).validate()


def run_windows(pipeline: WindowPipeline, frames: List[Frame], config: StreamConfig,
                camera: Optional[CameraModel] = None, odometry: Optional[Callable] = None):
    """Sliding windows through the same scheduler and Sim(3) chaining as the ROS node, synchronously.

    The trajectory's frame is the first camera's optical frame (as for a single window), or the odometry
    frame with ``odometry``; each frame's result comes from the first window that gives it context on both
    sides (see :mod:`.stream`). Returns (results, arrays, timings, windows, scale estimates per window).
    """
    sink = _Collector()
    # the stream's scheduler on this thread: no worker, every window runs in order
    processor = StreamProcessor(config, runner_factory=lambda: pipeline, sink=sink, odometry=odometry)
    pushed = [processor.push(f.rgb, f.stamp_ns, frame_id=frame_name(f), camera=camera) for f in frames]
    processor.flush()
    processor.run_until_idle()
    processor.close(flush=False)
    if sink.dropped or processor.stats.last_error:
        raise RuntimeError(f"{len(sink.dropped)} frame(s) not processed ({processor.stats.last_error or sink.dropped[0]})")
    pubs = [sink.published[f.seq] for f in pushed]
    results = [_in_trajectory(p) for p in pubs]
    arrays = {
        "stamps_ns": np.array([f.stamp_ns for f in frames], np.int64),
        "window_of_frame": np.array([p.window_id for p in pubs], np.int64),
        "poses_c2w": np.stack([r.cam_to_world for r in results]).astype(np.float32),
        "intrinsics": np.stack([r.intrinsics for r in results]).astype(np.float32),
        "dynamic_masks": np.stack([r.mask for r in results]),
        "depths": np.stack([r.depth for r in results]),
        "conf": np.stack([r.confidence for r in results]),
    }
    timings = dict(sink.timings)
    timings["total_s"] = sum(v for k, v in timings.items() if k != "total_s")
    return results, arrays, timings, sink.windows, sink.scales


def describe(summary: RunSummary) -> str:
    stages = ", ".join(f"{k[:-2]} {v:.2f}s" for k, v in summary.timings.items() if k.endswith("_s") and k != "total_s")
    text = f"{summary.frames} frames in {summary.windows} window(s), {summary.seconds:.1f}s ({stages})"
    s = summary.scale
    if s and s["source"] != "none":
        text += (f"; scale {s['value']:.4g} ({s['source']}, {s['state']}, spread {s['spread']:.2g})"
                 + ("; poses in metres" if scale_is_metric(s) else "; scale unknown: poses in the first window's unit"))
    return text
