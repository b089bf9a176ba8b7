"""The photographs that texture the synthetic rooms, split into disjoint train and held-out banks.

Every texture is a real photograph: images that scikit-image ships inside its wheel (read offline; the
ones it would fetch with pooch are not used) and frames of the repository's sample clip
``data/vtest_clip.mp4``. Sources and licences: :data:`TEXTURE_SOURCES` and ``data/TEXTURES.md``.

Split (no source appears in both):

* ``train``: 13 scikit-image photographs (astronaut, brick, camera, chelsea, coins, grass,
  hubble_deep_field, immunohistochemistry, retina, text, clock, cell, microaneurysms);
* ``heldout``: the frames of ``data/vtest_clip.mp4`` plus 3 scikit-image photographs
  (coffee, gravel, rocket).

Each source gives several square crops (the whole image and, for large images, its four quadrants),
each resized to 256×256 and stored with a mip pyramid (256 … 4 texels) so that far or grazing
surfaces are filtered instead of aliased. A bank is built once per split and cached.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

TEXTURE_SIZE = 256  # texels per side at mip level 0
MIP_LEVELS = 7      # 256, 128, 64, 32, 16, 8, 4
SAMPLE_CLIP = Path(__file__).resolve().parents[2] / "data" / "vtest_clip.mp4"
SPLITS = ("train", "heldout")

_SK = "scikit-image sample data (skimage.data, bundled in the scikit-image wheel)"

# name, origin, licence, split, loader. Licences as stated in scikit-image's docstrings of each image.
TEXTURE_SOURCES: List[Dict[str, str]] = [
    {"name": "astronaut", "origin": f"{_SK}: astronaut(); NASA Great Images database",
     "licence": "public domain (no known copyright restrictions)", "split": "train"},
    {"name": "brick", "origin": f"{_SK}: brick(); CC0Textures 'Bricks25'", "licence": "CC0-1.0", "split": "train"},
    {"name": "camera", "origin": f"{_SK}: camera(); photographer Lav Varshney", "licence": "CC0-1.0",
     "split": "train"},
    {"name": "chelsea", "origin": f"{_SK}: chelsea(); photographer Stefan van der Walt", "licence": "CC0-1.0",
     "split": "train"},
    {"name": "coins", "origin": f"{_SK}: coins(); Brooklyn Museum Collection",
     "licence": "no known copyright restrictions", "split": "train"},
    {"name": "grass", "origin": f"{_SK}: grass(); DeviantArt 'Grass 01' by linolafett", "licence": "CC0-1.0",
     "split": "train"},
    {"name": "hubble_deep_field", "origin": f"{_SK}: hubble_deep_field(); NASA / HubbleSite",
     "licence": "public domain (NASA)", "split": "train"},
    {"name": "immunohistochemistry", "origin": f"{_SK}: immunohistochemistry(); CMMI",
     "licence": "no known copyright restrictions", "split": "train"},
    {"name": "retina", "origin": f"{_SK}: retina(); Wikimedia Commons, Mikael Häggström", "licence": "CC0-1.0",
     "split": "train"},
    {"name": "text", "origin": f"{_SK}: text(); Wikipedia File:Corner.png",
     "licence": "public domain (no known copyright restrictions)", "split": "train"},
    {"name": "clock", "origin": f"{_SK}: clock(); photographer Stefan van der Walt",
     "licence": "public domain (released by the photographer)", "split": "train"},
    {"name": "cell", "origin": f"{_SK}: cell(); quantitative phase image (qpformat)", "licence": "CC0-1.0",
     "split": "train"},
    {"name": "microaneurysms", "origin": f"{_SK}: microaneurysms(); HRF Image Database, Andreas Maier",
     "licence": "CC0-1.0", "split": "train"},
    {"name": "coffee", "origin": f"{_SK}: coffee(); photographer Rachel Michetti (Pikolo Espresso Bar)",
     "licence": "CC0-1.0", "split": "heldout"},
    {"name": "gravel", "origin": f"{_SK}: gravel(); CC0Textures 'Gravel04'", "licence": "CC0-1.0",
     "split": "heldout"},
    {"name": "rocket", "origin": f"{_SK}: rocket(); SpaceX photos (DSCOVR launch)", "licence": "public domain (SpaceX)",
     "split": "heldout"},
    {"name": "vtest_clip", "origin": "data/vtest_clip.mp4 (cut from OpenCV sample data samples/data/vtest.avi)",
     "licence": "OpenCV licence (BSD-3-Clause up to OpenCV 4.4, Apache-2.0 from 4.5)", "split": "heldout"},
]


@dataclass(frozen=True)
class TextureBank:
    """Textures of one split as a flat texel table with a mip pyramid.

    ``texels``: (M, 3) uint8 RGB rows; texel (x, y) of texture k at level l is row
    ``level_offsets[l] + k * s_l**2 + y * s_l + x`` with ``s_l = TEXTURE_SIZE >> l``.
    ``grey``: (N,) bool, textures from grey-level photographs (they get a colour tint in the scene).
    ``names``: (N,) source name of each texture (several crops share a name).
    """

    texels: torch.Tensor
    level_offsets: Tuple[int, ...]
    n_textures: int
    grey: Tuple[bool, ...]
    names: Tuple[str, ...]

    @property
    def size(self) -> int:
        return TEXTURE_SIZE

    def to(self, device: torch.device | str) -> "TextureBank":
        return TextureBank(self.texels.to(device), self.level_offsets, self.n_textures, self.grey, self.names)


def _skimage_loader(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data
        return np.asarray(getattr(skimage.data, name)())
    return load


def _clip_frames(path: Path, indices: Tuple[int, ...]) -> List[np.ndarray]:
    import cv2
    if not path.is_file():
        raise FileNotFoundError(f"held-out textures need the sample clip {str(path)!r} (in the repository's data/)")
    cap = cv2.VideoCapture(str(path))
    frames, i = {}, 0
    while len(frames) < len(indices):
        ok, bgr = cap.read()
        if not ok:
            break
        if i in indices:
            frames[i] = np.ascontiguousarray(bgr[:, :, ::-1])
        i += 1
    cap.release()
    if len(frames) != len(indices):
        raise OSError(f"{path}: could read only {sorted(frames)} of frames {indices}")
    return [frames[i] for i in indices]


def _square_crops(img: np.ndarray, quadrants: bool) -> List[np.ndarray]:
    """The centred square crop, plus (for images large enough to keep detail) four corner squares."""
    h, w = img.shape[:2]
    s = min(h, w)
    crops = [img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]]
    if quadrants:
        q = s // 2
        for y0, x0 in ((0, 0), (0, w - q), (h - q, 0), (h - q, w - q)):
            crops.append(img[y0:y0 + q, x0:x0 + q])
    return crops


def _as_rgb8(img: np.ndarray) -> Tuple[np.ndarray, bool]:
    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = np.clip(a.astype(np.float64) * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        return np.repeat(a[:, :, None], 3, axis=2), True
    a = a[:, :, :3]
    grey = bool(np.array_equal(a[:, :, 0], a[:, :, 1]) and np.array_equal(a[:, :, 1], a[:, :, 2]))
    return a, grey


def _source_images(split: str) -> List[Tuple[str, np.ndarray]]:
    out = []
    for src in TEXTURE_SOURCES:
        if src["split"] != split:
            continue
        if src["name"] == "vtest_clip":
            # Static camera: two frames apart in time differ by the walking people; the quadrant crops add
            # the ground, the buildings and the people at higher detail.
            for frame in _clip_frames(SAMPLE_CLIP, (0, 12, 23)):
                out.append((src["name"], frame))
        else:
            out.append((src["name"], _skimage_loader(src["name"])()))
    return out


def _mip_pyramid(tex: np.ndarray) -> List[np.ndarray]:
    import cv2
    levels = [tex]
    for _ in range(1, MIP_LEVELS):
        s = levels[-1].shape[0] // 2
        levels.append(cv2.resize(levels[-1], (s, s), interpolation=cv2.INTER_AREA))
    return levels


@lru_cache(maxsize=None)
def texture_bank(split: str) -> TextureBank:
    """The (CPU) texture bank of ``split`` ("train" or "heldout"), built once per process."""
    import cv2
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    textures, grey, names = [], [], []
    for name, img in _source_images(split):
        rgb, is_grey = _as_rgb8(img)
        for crop in _square_crops(rgb, quadrants=min(rgb.shape[:2]) >= 288):
            interp = cv2.INTER_AREA if crop.shape[0] >= TEXTURE_SIZE else cv2.INTER_CUBIC
            textures.append(cv2.resize(crop, (TEXTURE_SIZE, TEXTURE_SIZE), interpolation=interp))
            grey.append(is_grey)
            names.append(name)
    per_level = [np.stack(lv) for lv in zip(*(_mip_pyramid(t) for t in textures))]  # level l: (N, s, s, 3)
    offsets, start = [], 0
    for lv in per_level:
        offsets.append(start)
        start += lv.shape[0] * lv.shape[1] * lv.shape[2]
    texels = torch.from_numpy(np.concatenate([lv.reshape(-1, 3) for lv in per_level]))
    return TextureBank(texels, tuple(offsets), len(textures), tuple(grey), tuple(names))


@lru_cache(maxsize=8)
def texture_bank_on(split: str, device: str) -> TextureBank:
    """:func:`texture_bank` moved to ``device`` (cached, so a GPU copy is made once)."""
    return texture_bank(split).to(torch.device(device))
