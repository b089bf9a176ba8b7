"""ROS times as integer nanoseconds, one converter for the whole package (no rclpy: any object with
``sec`` and ``nanosec`` is a stamp). Integer arithmetic throughout: float seconds lose nanoseconds."""
from __future__ import annotations

from typing import Tuple

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp) -> int:
    """``builtin_interfaces/Time`` (or anything with ``sec`` and ``nanosec``) -> nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def split_ns(ns: int) -> Tuple[int, int]:
    """Nanoseconds -> (sec, nanosec) with 0 <= nanosec < 1e9, as ``builtin_interfaces/Time`` wants them."""
    return divmod(int(ns), NS_PER_S)


def format_stamp(stamp_ns: int) -> str:
    """Nanoseconds -> seconds with exactly 9 decimals."""
    ns = int(stamp_ns)
    sign = "-" if ns < 0 else ""
    sec, nsec = split_ns(abs(ns))
    return f"{sign}{sec}.{nsec:09d}"


def parse_stamp(text: str) -> int:
    """Seconds as written by :func:`format_stamp` (any number of decimals up to 9) -> nanoseconds."""
    sec, _, frac = text.strip().partition(".")
    neg = sec.startswith("-")
    ns = abs(int(sec)) * NS_PER_S + int((frac + "000000000")[:9])
    return -ns if neg else ns
