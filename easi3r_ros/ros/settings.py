"""From parameter values to the core's settings: the stream's configuration and the factory that builds the
window pipeline (network, preset, device). No rclpy: the node and the tests share it."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from ..pipeline.scheduler import StreamConfig
from ..pipeline.world import optical_to_body


def snapshot_value(v):
    """A parameter value as plain Python (rclpy gives arrays for list parameters)."""
    return list(v) if isinstance(v, (list, tuple)) or type(v).__name__ == "array" else v


def make_runner_factory(values: Dict[str, Any], report: Optional[Dict[str, str]] = None, logger=None):
    """A callable that builds the WindowPipeline from parameter values (run on the stream's worker: torch
    and the network are imported and loaded there, never on the executor)."""
    values = dict(values)
    report = report if report is not None else {}

    def factory():
        import torch

        from ..model.checkpoint import CheckpointError, load_checkpoint, random_network
        from ..model.default import DEFAULT_MODEL_NAME, calibrated_overrides, default_model_path
        from ..pipeline.window import WindowPipeline, preset_config

        if values["torch_threads"] > 0:
            torch.set_num_threads(int(values["torch_threads"]))
        if values["random_weights"]:
            if logger is not None:
                logger.warning("=" * 72)
                logger.warning(f"RANDOM WEIGHTS ({values['random_weights']}): a smoke run; every mask, pose and "
                               "point this node publishes is MEANINGLESS")
                logger.warning("=" * 72)
            net, text = random_network(values["random_weights"], seed=0)
            calibration = {}
            report["model"] = f"random:{values['random_weights']}"
        else:
            checkpoint = values["checkpoint"] or default_model_path()
            if checkpoint is None:
                raise CheckpointError("no checkpoint configured and no shipped model installed: set the "
                                      "'checkpoint' parameter (a .pth file or a Hugging Face folder)")
            net, info = load_checkpoint(checkpoint, allow_pickle=bool(values["trust_checkpoint"]))
            name = info.model_string.split("(")[0] if values["checkpoint"] else DEFAULT_MODEL_NAME
            report["model"] = f"{name} ({info.format}: {info.path})"
            calibration = calibrated_overrides(checkpoint)
        cfg = preset_config(values["preset"], image_size=values["image_size"] or None,
                            scene_graph=f"swinstride-{values['scene_graph_width']}", niter=values["ga_iters"] or None,
                            kmeans=values["kmeans"], device=values["device"], precision=values["precision"],
                            keep_fp32=values["keep_fp32"],
                            static_conf_threshold=values["cloud_conf_threshold"],
                            pair_batch=int(values["pair_batch"]), warm_start=bool(values["warm_start"]) or None,
                            align_coarse=int(values["align_coarse"]) or None,
                            **calibration)
        pipe = WindowPipeline(net, cfg)
        report["device"] = str(pipe.device)
        report["precision"] = cfg.precision
        if cfg.precision == "fp16" and pipe.device.type != "cuda":
            report["precision"] = "fp32 (fp16 needs CUDA)"
            if logger is not None:
                logger.warning(f"precision fp16 is a CUDA autocast: on {pipe.device} the network runs in fp32 "
                               "(bf16 autocast works on the CPU)")
        return pipe

    return factory


def odom_T_world(values: Dict[str, Any]) -> np.ndarray:
    """The odometry frame from the chain frame (the first camera's optical frame): REP 103 axes, or, with
    base_frame set, base_to_camera so that base_frame starts at the odometry origin."""
    if values.get("base_frame"):
        from .conversions import pose7_to_matrix
        return pose7_to_matrix(values["base_to_camera"])
    return optical_to_body()


def stream_config(values: Dict[str, Any]) -> StreamConfig:
    return StreamConfig(window_size=int(values["window_size"]), stride=int(values["stride"]),
                        queue_limit=int(values["queue_limit"]), cloud_voxel_size=float(values["cloud_voxel_size"]),
                        map_max_points=int(values["map_max_points"]),
                        odom_T_world=tuple(map(tuple, odom_T_world(values))),
                        scale_source=str(values["scale_source"]), fixed_scale=float(values["fixed_scale"]),
                        scale_min_motion=float(values["scale_min_motion"]),
                        scale_max_spread=float(values["scale_max_spread"]),
                        max_frame_age=float(values["max_frame_age"])).validate()
