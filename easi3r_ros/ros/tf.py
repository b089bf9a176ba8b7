"""TF broadcasting: tf2_ros where it is installed, otherwise ``tf2_msgs/TFMessage`` publishers on /tf and
/tf_static with tf2_ros's QoS (dynamic: reliable, volatile, depth 100; static: reliable, transient local,
depth 1, every static transform re-sent in one message, as tf2_ros's static broadcaster does)."""
from __future__ import annotations

from typing import Dict, Iterable

import numpy as np

from .conversions import quat_from_matrix
from .qos import qos_profile

try:  # a real ROS 2 install
    import tf2_ros as _tf2_ros
except ImportError:  # pragma: no cover - depends on the environment
    _tf2_ros = None


def transform_stamped(parent: str, child: str, t: np.ndarray, stamp):
    """4x4 pose of ``child`` in ``parent`` -> ``geometry_msgs/TransformStamped``."""
    from geometry_msgs.msg import Quaternion, Transform, TransformStamped, Vector3
    from std_msgs.msg import Header
    x, y, z, w = quat_from_matrix(t[:3, :3])
    return TransformStamped(header=Header(stamp=stamp, frame_id=parent), child_frame_id=child,
                            transform=Transform(translation=Vector3(x=float(t[0, 3]), y=float(t[1, 3]),
                                                                    z=float(t[2, 3])),
                                                rotation=Quaternion(x=x, y=y, z=z, w=w)))


def dynamic_qos():
    """tf2_ros's /tf profile."""
    return qos_profile(100)


def static_qos():
    """tf2_ros's /tf_static profile (latched)."""
    return qos_profile(1, latched=True)


class TfBroadcaster:
    """``send(transforms)`` on /tf and ``send_static(transforms)`` on /tf_static."""

    def __init__(self, node, use_tf2_ros: bool = True):
        self.node = node
        self._static: Dict[str, object] = {}
        if use_tf2_ros and _tf2_ros is not None:
            self.backend = "tf2_ros"
            self._dyn = _tf2_ros.TransformBroadcaster(node)
            self._sta = _tf2_ros.StaticTransformBroadcaster(node)
        else:
            from tf2_msgs.msg import TFMessage
            self.backend = "tf2_msgs"
            self._msg = TFMessage
            self._dyn = node.create_publisher(TFMessage, "/tf", dynamic_qos())
            self._sta = node.create_publisher(TFMessage, "/tf_static", static_qos())

    def send(self, transforms: Iterable) -> None:
        transforms = list(transforms)
        if not transforms:
            return
        if self.backend == "tf2_ros":
            self._dyn.sendTransform(transforms)
        else:
            self._dyn.publish(self._msg(transforms=transforms))

    def send_static(self, transforms: Iterable) -> None:
        for t in transforms:
            self._static[t.child_frame_id] = t
        if self.backend == "tf2_ros":
            self._sta.sendTransform(list(self._static.values()))
        else:
            self._sta.publish(self._msg(transforms=list(self._static.values())))

    def clear_static(self) -> None:
        self._static.clear()
