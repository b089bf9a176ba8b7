"""Play a ROS 2 bag into a live graph without rosbag2: raw (CDR) messages read with rosbags and
published as they are, at the recorded rate, optionally with /clock.

    easi3r bag play BAG [--topics /cam/image_raw ...] [--rate 1.0] [--loop] [--clock]
                        [--best-effort] [--wait-for-subscribers N]
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

DEFAULT_NODE_NAME = "easi3r_bag_player"


@dataclass
class PlayStats:
    messages: int = 0
    per_topic: Dict[str, int] = field(default_factory=dict)
    loops: int = 0
    wall_s: float = 0.0
    max_lag_s: float = 0.0     # how far publication fell behind the recorded schedule


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    parts = msgtype.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    pkg, kind, name = parts
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(f"message type {msgtype} is not available in this environment ({exc})") from None


def play_bag(path, topics: Optional[Sequence[str]] = None, rate: float = 1.0, loop: bool = False,
             publish_clock: bool = False, reliable: bool = True, wait_for_subscribers: int = 0,
             node_name: str = DEFAULT_NODE_NAME, wait_timeout: float = 30.0, remap: Optional[Dict[str, str]] = None,
             stop_event=None, context=None, max_loops: Optional[int] = None) -> PlayStats:
    """Publish the bag's messages (all topics, or ``topics``) at ``rate`` times the recorded speed.

    ``wait_for_subscribers``: before starting, wait (up to ``wait_timeout`` s) until every played topic
    (and /clock, when published) has that many subscriptions. ``publish_clock`` publishes ``rosgraph_msgs/Clock`` on /clock with the
    recording time. ``remap`` maps bag topics to other names. rclpy must be initialised by the caller
    (``context`` for a non-default context); ``stop_event`` (threading.Event) ends playback early.
    """
    import rclpy
    from rclpy.node import Node

    from ..io.bag import bag_topics, read_raw_messages
    from .conversions import ns_to_stamp
    from .qos import qos_profile

    if not rate > 0:
        raise ValueError(f"rate must be > 0 (got {rate})")
    remap = remap or {}
    available = {t: ty for t, ty, _ in bag_topics(path)}
    wanted = list(topics) if topics else sorted(available)
    missing = [t for t in wanted if t not in available]
    if missing:
        raise ValueError(f"topic(s) {', '.join(missing)} not in the bag; it has: {', '.join(sorted(available))}")
    node = Node(node_name, context=context) if context is not None else Node(node_name)
    stats = PlayStats()
    try:
        # /tf_static is latched (transient local), as tf2 publishes and listens to it: a volatile publisher
        # would not match a tf2 listener's subscription at all.
        pubs = {t: node.create_publisher(message_class(available[t]), remap.get(t, t),
                                         qos_profile(100, reliable or remap.get(t, t) == "/tf_static",
                                                     latched=remap.get(t, t) == "/tf_static"))
                for t in wanted}
        clock_pub = None
        if publish_clock:
            from rosgraph_msgs.msg import Clock
            clock_pub = node.create_publisher(Clock, "/clock", qos_profile(1))
        if wait_for_subscribers > 0:
            # /clock too: a sim-time node that discovers it late would miss the first clock ticks
            waited = {**pubs, **({"/clock": clock_pub} if clock_pub is not None else {})}
            end = time.monotonic() + wait_timeout
            while any(p.get_subscription_count() < wait_for_subscribers for p in waited.values()):
                if time.monotonic() > end:
                    low = {t: p.get_subscription_count() for t, p in waited.items()}
                    raise TimeoutError(f"waited {wait_timeout:g} s for {wait_for_subscribers} subscriber(s) on "
                                       f"each topic; have {low}")
                time.sleep(0.02)
        t_start = time.monotonic()
        while True:
            t0_bag = None
            t0_wall = time.monotonic()
            for raw in read_raw_messages(path, wanted):
                if stop_event is not None and stop_event.is_set():
                    break
                if t0_bag is None:
                    t0_bag = raw.timestamp_ns
                due = t0_wall + (raw.timestamp_ns - t0_bag) / 1e9 / rate
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                else:
                    stats.max_lag_s = max(stats.max_lag_s, now - due)
                if clock_pub is not None:
                    clock_pub.publish(Clock(clock=ns_to_stamp(raw.timestamp_ns)))
                pubs[raw.topic].publish(raw.data)  # serialised CDR bytes, published as they are
                stats.messages += 1
                stats.per_topic[raw.topic] = stats.per_topic.get(raw.topic, 0) + 1
            stats.loops += 1
            if not loop or (stop_event is not None and stop_event.is_set()) or not rclpy.ok(context=context) \
                    or (max_loops is not None and stats.loops >= max_loops):
                break
        # let reliable writers deliver their last samples before the node goes away
        time.sleep(0.2)
        stats.wall_s = time.monotonic() - t_start
    finally:
        node.destroy_node()
    return stats


def build_parser(prog: str = "easi3r bag play") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Play a ROS 2 bag (sqlite3 or mcap) into the live ROS 2 "
                                "graph at the recorded rate, without rosbag2.")
    p.add_argument("bag", help="bag directory (or its .db3 / .mcap file)")
    p.add_argument("--topics", nargs="+", default=None, help="topics to play (default: all)")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    p.add_argument("--loop", action="store_true", help="play again from the start when the bag ends")
    p.add_argument("--clock", action="store_true", help="publish /clock from the recording time")
    p.add_argument("--best-effort", action="store_true",
                   help="publish best-effort (default reliable: every frame reaches reliable subscribers)")
    p.add_argument("--wait-for-subscribers", type=int, default=0, metavar="N",
                   help="start once every played topic (and /clock, with --clock) has N subscriptions")
    p.add_argument("--wait-timeout", type=float, default=30.0, help="seconds to wait for subscribers")
    p.add_argument("--remap", nargs="+", default=[], metavar="FROM:=TO", help="publish a bag topic under another name")
    p.add_argument("--node-name", default=DEFAULT_NODE_NAME)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from .node import split_ros_args
    own, ros_args = split_ros_args(argv)
    args = build_parser().parse_args(own)
    remap = {}
    for item in args.remap:
        if ":=" not in item:
            print(f"error: --remap wants FROM:=TO, got {item!r}", file=sys.stderr)
            return 2
        a, b = item.split(":=", 1)
        remap[a] = b

    import rclpy
    rclpy.init(args=["easi3r_bag_player"] + ros_args)
    try:
        stats = play_bag(args.bag, topics=args.topics, rate=args.rate, loop=args.loop, publish_clock=args.clock,
                         reliable=not args.best_effort, wait_for_subscribers=args.wait_for_subscribers,
                         node_name=args.node_name, wait_timeout=args.wait_timeout, remap=remap)
    except KeyboardInterrupt:
        return 130
    except (ValueError, TimeoutError, RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        rclpy.try_shutdown()
    per = ", ".join(f"{t}: {n}" for t, n in sorted(stats.per_topic.items()))
    print(f"played {stats.messages} messages ({per}) in {stats.wall_s:.2f} s, {stats.loops} loop(s), "
          f"max lag {stats.max_lag_s * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
