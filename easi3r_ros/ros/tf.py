"""TF: tf2_ros where it is installed, otherwise small adapters of ours.

Broadcasting: ``tf2_msgs/TFMessage`` publishers on /tf and /tf_static with tf2_ros's QoS (dynamic:
reliable, volatile, depth 100; static: reliable, transient local, depth 1, every static transform re-sent
in one message, as tf2_ros's static broadcaster does). Listening: :class:`TfBuffer` (no rclpy needed, so it
is unit-tested without spinning) fed by /tf and /tf_static subscriptions (:class:`TfListener`).
"""
from __future__ import annotations

import bisect
import threading
import time
from typing import Dict, Iterable, List, Optional, Tuple

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

    def remove_static(self, child: str) -> bool:
        """Forget the static transform to ``child`` (True when there was one); send_static re-sends the rest."""
        return self._static.pop(child, None) is not None


# ---------------------------------------------------------------------------------------------- listening
def transform_to_matrix(t) -> np.ndarray:
    """``geometry_msgs/Transform`` (or anything with .translation and .rotation) -> 4x4."""
    from .conversions import matrix_from_quat
    m = np.eye(4)
    q = t.rotation
    m[:3, :3] = matrix_from_quat((q.x, q.y, q.z, q.w))
    m[:3, 3] = (t.translation.x, t.translation.y, t.translation.z)
    return m


class TfBuffer:
    """A thread-safe TF buffer for when tf2_ros is not installed: per (parent, child) edge a time-sorted,
    bounded history (``cache_s`` seconds behind the newest stamp, at most ``max_per_edge`` entries), static
    edges without time; lookups compose the chain through the frames' common ancestor and interpolate each
    dynamic edge at the stamp (linear translation, slerp rotation). No extrapolation, as in tf2.

    A child has one parent: a transform naming a new parent replaces the edge (tf2 does the same) and is
    counted in ``parent_changes``."""

    def __init__(self, cache_s: float = 10.0, max_per_edge: int = 2000):
        self.cache_ns = int(cache_s * 1e9)
        self.max_per_edge = int(max_per_edge)
        self._lock = threading.Lock()
        self._parent: Dict[str, str] = {}
        self._static: Dict[str, np.ndarray] = {}                       # child -> parent_T_child
        self._stamps: Dict[str, List[int]] = {}                        # child -> sorted stamps
        self._poses: Dict[str, List[np.ndarray]] = {}                  # child -> parent_T_child per stamp
        self.parent_changes = 0
        self.invalid = 0                                                # transforms ignored (bad quaternion)

    # ------------------------------------------------------------------ input
    def set_transform(self, parent: str, child: str, stamp_ns: int, matrix: np.ndarray, static: bool = False):
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child or parent == child:
            return
        m = np.asarray(matrix, np.float64)
        with self._lock:
            if self._parent.get(child, parent) != parent:
                self.parent_changes += 1
                self._static.pop(child, None)
                self._stamps.pop(child, None)
                self._poses.pop(child, None)
            self._parent[child] = parent
            if static:
                self._static[child] = m
                self._stamps.pop(child, None)
                self._poses.pop(child, None)
                return
            self._static.pop(child, None)
            stamps = self._stamps.setdefault(child, [])
            poses = self._poses.setdefault(child, [])
            k = bisect.bisect_left(stamps, int(stamp_ns))
            if k < len(stamps) and stamps[k] == int(stamp_ns):
                poses[k] = m
            else:
                stamps.insert(k, int(stamp_ns))
                poses.insert(k, m)
            cut = bisect.bisect_left(stamps, stamps[-1] - self.cache_ns)
            cut = max(cut, len(stamps) - self.max_per_edge)
            if cut > 0:
                del stamps[:cut], poses[:cut]

    def add_message(self, msg, static: bool = False) -> None:
        """Every transform of a ``tf2_msgs/TFMessage``."""
        from .conversions import stamp_to_ns
        for t in msg.transforms:
            try:
                m = transform_to_matrix(t.transform)
            except ValueError:   # a zero or non-finite quaternion: tf2 ignores such a transform too
                self.invalid += 1
                continue
            if not np.isfinite(m).all():
                self.invalid += 1
                continue
            self.set_transform(t.header.frame_id, t.child_frame_id, stamp_to_ns(t.header.stamp), m, static)

    def clear(self) -> None:
        with self._lock:
            self._parent.clear(); self._static.clear(); self._stamps.clear(); self._poses.clear()

    # ------------------------------------------------------------------ queries
    def parent_of(self, child: str) -> Optional[str]:
        with self._lock:
            return self._parent.get(child.lstrip("/"))

    def _chain(self, frame: str) -> List[str]:
        """frame, its parent, ..., the root (a cycle ends the walk)."""
        out = [frame]
        while out[-1] in self._parent and len(out) < 1000:
            nxt = self._parent[out[-1]]
            if nxt in out:
                break
            out.append(nxt)
        return out

    def _edge_at(self, child: str, stamp_ns: int) -> Tuple[Optional[np.ndarray], str]:
        if child in self._static:
            return self._static[child], ""
        stamps, poses = self._stamps.get(child, []), self._poses.get(child, [])
        if not stamps:
            return None, f"no transform {self._parent.get(child)} -> {child} yet"
        if stamp_ns < stamps[0] or stamp_ns > stamps[-1]:
            side = "past" if stamp_ns < stamps[0] else "future"
            return None, (f"{self._parent[child]} -> {child} at {stamp_ns * 1e-9:.3f} s would be an extrapolation "
                          f"into the {side} (known {stamps[0] * 1e-9:.3f} .. {stamps[-1] * 1e-9:.3f} s)")
        k = bisect.bisect_left(stamps, stamp_ns)
        if stamps[k] == stamp_ns:
            return poses[k], ""
        t0, t1 = stamps[k - 1], stamps[k]
        return interpolate(poses[k - 1], poses[k], (stamp_ns - t0) / (t1 - t0)), ""

    def lookup(self, target: str, source: str, stamp_ns: Optional[int] = None) -> Tuple[Optional[np.ndarray], str]:
        """(target_T_source, "") — the pose of ``source`` in ``target`` at ``stamp_ns`` (None: the latest
        time every dynamic edge of the chain knows) — or (None, why)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        with self._lock:
            if target == source:
                return np.eye(4), ""
            up_s, up_t = self._chain(source), self._chain(target)
            common = next((f for f in up_s if f in set(up_t)), None)
            if common is None:
                known = [f for f in (target, source) if f not in self._parent and not any(
                    p == f for p in self._parent.values())]
                why = (f"frame {known[0]!r} is unknown" if known
                       else f"{target!r} and {source!r} are not connected")
                return None, why
            edges = up_s[:up_s.index(common)] + up_t[:up_t.index(common)]
            if stamp_ns is None:
                dyn = [self._stamps[c][-1] for c in edges if c not in self._static and self._stamps.get(c)]
                stamp_ns = min(dyn) if dyn else 0
            mats = {}
            for child in edges:
                m, why = self._edge_at(child, int(stamp_ns))
                if m is None:
                    return None, why
                mats[child] = m

        def up(chain):   # common_T_frame for the first frame of chain
            t = np.eye(4)
            for child in reversed(chain[:chain.index(common)]):
                t = t @ mats[child]
            return t
        return np.linalg.inv(up(up_t)) @ up(up_s), ""


def interpolate(a: np.ndarray, b: np.ndarray, f: float) -> np.ndarray:
    """Rigid pose between ``a`` (f = 0) and ``b`` (f = 1): linear translation, slerp rotation."""
    from scipy.spatial.transform import Rotation, Slerp
    out = np.eye(4)
    out[:3, :3] = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([a[:3, :3], b[:3, :3]])))([f]).as_matrix()[0]
    out[:3, 3] = (1 - f) * a[:3, 3] + f * b[:3, 3]
    return out


PARENT_CACHE_S = 1.0


class TfListener:
    """``lookup(target, source, stamp_ns)`` and ``parent_of(child)`` over the live TF tree: tf2_ros's Buffer
    and TransformListener where installed, otherwise a :class:`TfBuffer` fed by our own /tf and /tf_static
    subscriptions with tf2_ros's listener QoS (/tf_static transient local, so late joiners get it)."""

    def __init__(self, node, use_tf2_ros: bool = True, cache_s: float = 10.0):
        self.node = node
        self._frames: Dict[str, dict] = {}           # tf2_ros backend: the parsed tree (parent_of)
        self._frames_at: Optional[float] = None
        if use_tf2_ros and _tf2_ros is not None:
            from rclpy.duration import Duration
            self.backend = "tf2_ros"
            self.buffer = _tf2_ros.Buffer(cache_time=Duration(seconds=cache_s))
            self._listener = _tf2_ros.TransformListener(self.buffer, node)
        else:
            from tf2_msgs.msg import TFMessage
            self.backend = "builtin"
            self.buffer = TfBuffer(cache_s)
            self._subs = [
                node.create_subscription(TFMessage, "/tf", lambda m: self.buffer.add_message(m, False),
                                         qos_profile(100)),
                node.create_subscription(TFMessage, "/tf_static", lambda m: self.buffer.add_message(m, True),
                                         qos_profile(100, latched=True))]

    def lookup(self, target: str, source: str, stamp_ns: Optional[int] = None) -> Tuple[Optional[np.ndarray], str]:
        if self.backend == "builtin":
            return self.buffer.lookup(target, source, stamp_ns)
        from rclpy.time import Time
        try:
            t = self.buffer.lookup_transform(target, source, Time(nanoseconds=int(stamp_ns or 0)))
        except Exception as exc:  # tf2's LookupException, ExtrapolationException, ...
            return None, f"{type(exc).__name__}: {exc}"
        return transform_to_matrix(t.transform), ""

    def parent_of(self, child: str) -> Optional[str]:
        if self.backend == "builtin":
            return self.buffer.parent_of(child)
        # tf2_ros exposes parents only through the whole tree as YAML: parse it at most once per
        # PARENT_CACHE_S (the node asks for each published frame; a parent rarely changes)
        now = time.monotonic()
        if self._frames_at is None or now - self._frames_at > PARENT_CACHE_S:
            import yaml
            frames = yaml.safe_load(self.buffer.all_frames_as_yaml()) or {}
            self._frames, self._frames_at = (frames if isinstance(frames, dict) else {}), now
        entry = self._frames.get(child.lstrip("/"))
        return entry.get("parent") if isinstance(entry, dict) else None

    def close(self) -> None:
        if self.backend == "builtin":
            for s in self._subs:
                self.node.destroy_subscription(s)
            self._subs = []
