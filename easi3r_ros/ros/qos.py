"""The QoS profiles of the node, the bag player and the TF adapter: keep-last, reliable or best effort,
volatile or latched (transient local)."""
from __future__ import annotations


def qos_profile(depth: int, reliable: bool = True, latched: bool = False):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=int(depth), history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
