"""A trajectory history of bounded size for hours of streaming: recent poses at full rate, older ones
decimated.

:class:`DecimatedPath` keeps at most ``max_poses`` items. When it is full, the older half is thinned to
every other item (its first and last kept), so the newest poses stay at full rate while the whole run
since the start stays represented at a resolution that halves each time it fills. Appending is amortised
O(1) and memory never exceeds ``max_poses`` items. The core imports no ROS; items are whatever the caller
stores (e.g. ``PoseStamped`` messages).
"""
from __future__ import annotations

from typing import Any, Iterable, List


class DecimatedPath:
    def __init__(self, max_poses: int):
        if max_poses < 4:
            raise ValueError(f"max_poses must be >= 4 (got {max_poses})")
        self.max_poses = int(max_poses)
        self._items: List[Any] = []
        self.decimations = 0

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items = []
        self.decimations = 0

    def extend(self, items: Iterable[Any]) -> None:
        for item in items:
            self._items.append(item)
            if len(self._items) > self.max_poses:
                self._thin()

    def _thin(self) -> None:
        half = len(self._items) // 2
        old = self._items[:half]
        kept = old[::2]
        if old and kept[-1] is not old[-1]:
            kept.append(old[-1])
        self._items = kept + self._items[half:]
        if len(self._items) > self.max_poses:  # tiny caps: drop the oldest
            self._items = self._items[-self.max_poses:]
        self.decimations += 1

    def items(self) -> List[Any]:
        return list(self._items)
