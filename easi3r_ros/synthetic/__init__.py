"""Procedural textured rooms with exact ground truth (no ROS): static training pairs and dynamic sequences.

* :func:`render_static_pairs` — B pairs of views of static rooms (DUSt3R training targets: both views'
  pointmaps in camera 1, depths, poses, K), overlap guaranteed;
* :func:`make_sequence` — a smooth camera path through a room with 0–3 independently moving solids, with
  RGB, depth, world pointmaps, poses, K, instance ids and the exact dynamic mask per frame;
* :func:`write_sequence` — a sequence as PNG/NPY/TUM/JSON files;
* :data:`TEXTURE_SOURCES` — every photograph used as a texture, its origin, licence and split.

Rooms 4–9 m × 4–9 m × 2.5–3.5 m (floor, four walls, ceiling) hold yawed cuboids, spheres and vertical
cylinders, all textured with real photographs (``data/TEXTURES.md``; the train and held-out splits share no
photograph and no scene seed) under a directional light plus ambient. Rendering is vectorised ray casting
in torch, on the CPU or a GPU (``device``); nothing is downloaded.

Speed on one thread of the 2-core Intel Xeon development machine (torch 2.13 CPU, CPU time of the
process, measured while other jobs loaded the machine; ``torch.set_num_threads(1)``):

=====================  ==============  ===============
                       224 × 224       240 × 320
=====================  ==============  ===============
static pairs           20 pairs/s      14 pairs/s
sequence frames        32 frames/s     24 frames/s
=====================  ==============  ===============

(12-frame sequences with 2 moving solids, including the placement checks.) Building a split's texture bank
takes ~0.5–1.7 s once per process.
"""
from .products import SyntheticSequence, make_sequence, render_static_pairs, write_sequence
from .textures import TEXTURE_SOURCES

__all__ = ["render_static_pairs", "make_sequence", "write_sequence", "SyntheticSequence", "TEXTURE_SOURCES"]
