"""Frames lost before the node's callback, as far as the middleware can tell (no rclpy import).

A best-effort subscription, or a reliable one whose history (``input_depth``) overflows while the executor
is busy, loses images without any error. DDS numbers each writer's samples, and rclpy hands the number to
callbacks that take a ``MessageInfo``: a gap between consecutive numbers of one publisher is that many
samples published and never delivered. The count starts at the first sample received from each publisher
(what was published before the node listened is not a loss), and samples lost after the last one received
are only seen when the next one arrives. Where the middleware gives no sequence numbers, only the rates are
reported: frames received per second, and the publisher's rate estimated from the header stamps (the median
stamp step, which holds while fewer than half of the frames are lost).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Mapping, Optional, Tuple


@dataclass
class _Publisher:
    last_seq: int
    lost: int = 0


@dataclass
class InputMonitor:
    rate_window_s: float = 5.0         # rates are measured over this much recent receive time
    max_publishers: int = 64           # publishers remembered (the oldest forgotten first)
    lost: int = 0                      # samples published and never delivered, summed over publishers
    received: int = 0
    out_of_order: int = 0              # sequence numbers that went backwards (a restarted publisher)
    sequence_numbers: Optional[bool] = None   # None: nothing received yet
    _pubs: Dict[bytes, _Publisher] = field(default_factory=dict)
    _recent: Deque[Tuple[float, int, Optional[int]]] = field(default_factory=deque)  # (receive s, stamp ns, seq)

    def observe(self, info: Optional[Mapping[str, Any]], stamp_ns: int, now: float) -> int:
        """Record one received frame (``info``: rclpy's MessageInfo, or None). Returns the samples newly
        found lost before it."""
        self.received += 1
        seq = (info or {}).get("publication_sequence_number")
        seq = int(seq) if seq else None    # 0 / None: the middleware does not number samples
        self.sequence_numbers = seq is not None
        new = 0
        if seq is not None:
            gid = _gid_key((info or {}).get("publisher_gid"))
            pub = self._pubs.get(gid)
            if pub is None:
                if len(self._pubs) >= self.max_publishers:
                    self._pubs.pop(next(iter(self._pubs)))
                self._pubs[gid] = _Publisher(seq)
            elif seq > pub.last_seq:
                new = seq - pub.last_seq - 1
                pub.lost += new
                pub.last_seq = seq
            else:
                self.out_of_order += 1
                pub.last_seq = seq
        self.lost += new
        self._recent.append((now, int(stamp_ns), seq))
        while self._recent and now - self._recent[0][0] > self.rate_window_s:
            self._recent.popleft()
        return new

    def rates(self) -> Tuple[float, float]:
        """(frames received per second, the publisher's frames per second), nan where not measurable."""
        r = list(self._recent)
        if len(r) < 3:
            return math.nan, math.nan
        span = r[-1][0] - r[0][0]
        received = (len(r) - 1) / span if span > 0 else math.nan
        seqs = [(t, s) for t, _, s in r if s is not None]
        if len(seqs) >= 3 and seqs[-1][1] > seqs[0][1] and seqs[-1][0] > seqs[0][0]:
            # samples the publisher numbered over the same receive time span
            published = (seqs[-1][1] - seqs[0][1]) / (seqs[-1][0] - seqs[0][0])
        else:
            steps = sorted(b[1] - a[1] for a, b in zip(r, r[1:]) if b[1] > a[1])
            published = 1e9 / steps[len(steps) // 2] if steps else math.nan
        return received, published

    def snapshot(self) -> Dict[str, Any]:
        received_hz, publisher_hz = self.rates()
        return dict(input_lost=self.lost, input_sequence_numbers={None: "unknown", True: "yes",
                                                                   False: "no"}[self.sequence_numbers],
                    input_rate_hz=received_hz, publisher_rate_hz=publisher_hz, input_publishers=len(self._pubs))


def _gid_key(gid: Any) -> bytes:
    if gid is None:
        return b""
    if isinstance(gid, Mapping):
        gid = gid.get("data", b"")
    try:
        return bytes(gid)
    except (TypeError, ValueError):
        return repr(gid).encode()
