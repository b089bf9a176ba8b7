"""Where training and validation pairs come from: the synthetic renderer, addressed by seeds.

The pairs of training step k depend only on (run seed, k), so a resumed run sees exactly the batches an
uninterrupted one would. Validation pairs come from the renderer's held-out split (scenes and textures
disjoint from training) at fixed seeds that do not depend on the run seed, so runs are compared on the
same pairs.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterator, Tuple

import numpy as np
import torch

# render_static_pairs(seed, batch, hw=(H, W), split="train"|"heldout", device=...) -> dict of tensors
DataFn = Callable[..., Dict[str, torch.Tensor]]

VAL_CHUNK = 8          # held-out pairs per render call: the validation set of N pairs is the first N of a
                       # fixed sequence of chunks, whatever N
ROOM_PAIRS = 64        # training pairs averaged into the "average room" baseline
_ROOM_TAG = 0x524F4F4D  # "ROOM": seeds of the baseline's pairs, apart from any run's step seeds


def default_data_fn() -> DataFn:
    from ..synthetic import render_static_pairs  # imported on use: the renderer pulls in its textures

    return render_static_pairs


def step_seed(seed: int, step: int) -> int:
    """Renderer seed of training step ``step`` of a run seeded ``seed`` (a hash: no overlap between runs)."""
    return int(np.random.SeedSequence([int(seed), int(step)]).generate_state(1, dtype=np.uint32)[0])


def train_batch(data_fn: DataFn, seed: int, step: int, batch: int, hw: Tuple[int, int],
                device: torch.device) -> Dict[str, torch.Tensor]:
    return data_fn(step_seed(seed, step), batch, hw=hw, split="train", device=device)


def _chunks(data_fn: DataFn, n: int, hw, split: str, device, seed_of) -> Iterator[Dict[str, torch.Tensor]]:
    done, k = 0, 0
    while done < n:
        batch = data_fn(seed_of(k), VAL_CHUNK, hw=hw, split=split, device=device)
        take = min(VAL_CHUNK, n - done)
        yield {name: value[:take] for name, value in batch.items()}
        done += take
        k += 1


def heldout_batches(data_fn: DataFn, n: int, hw: Tuple[int, int], device) -> Iterator[Dict[str, torch.Tensor]]:
    """The first ``n`` pairs of the fixed held-out sequence, in chunks of at most VAL_CHUNK."""
    return _chunks(data_fn, n, hw, "heldout", device, lambda k: k)


def room_batches(data_fn: DataFn, hw: Tuple[int, int], device, n: int = ROOM_PAIRS):
    """Training-split pairs for the "average room" baseline."""
    return _chunks(data_fn, n, hw, "train", device, lambda k: step_seed(_ROOM_TAG, k))
