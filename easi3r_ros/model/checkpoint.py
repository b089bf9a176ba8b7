"""Loading and saving DUSt3R / MonST3R checkpoints.

Two formats:

* official ``.pth``: ``torch.save({'model': state_dict, 'args': argparse.Namespace(model="...")})``. The
  architecture comes from ``args.model``, parsed without ``eval``. ``.pth`` files are Python pickles: they
  are loaded with ``weights_only=True`` and only ``argparse.Namespace`` allowed; ``allow_pickle=True``
  lifts that for trusted files that carry other objects (logged as a warning: unpickling can run code).
* Hugging Face folder: ``config.json`` (the constructor keywords) + ``model.safetensors``.

Checkpoints are untrusted input: only regular files are opened, reading has a time limit, the architecture is
bounded (:data:`~.config.MAX_ARCHITECTURE`, :data:`MAX_PARAMETERS`) before anything is allocated, non-finite
weights are refused, and the loaded network owns its weights (nothing stays mapped from the file, so the file may
change or vanish afterwards without effect).
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import pickle
import pickletools
import re
import stat
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch

from .config import (MAX_PARAMETERS, ModelConfig, ModelConfigError, config_from_kwargs, parse_model_string,
                     resolve_model)
from .network import Dust3rNetwork
from .recipe import ALIAS_MARKER


class CheckpointError(RuntimeError):
    """A checkpoint could not be used; the message says why and what was found."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    pass


class CheckpointCorruptError(CheckpointError):
    pass


class NotACheckpointError(CheckpointError):
    pass


class UnknownArchitectureError(CheckpointError):
    pass


class StateDictMismatchError(CheckpointError):
    pass


log = logging.getLogger(__name__)

# A load that reads for longer than this fails (a stalled network or FUSE mount must not hold it forever).
READ_TIMEOUT_S = 300.0
MAX_CONFIG_BYTES = 1 << 20
# fp64 weights of the largest network accepted, plus container overhead: anything bigger is not a checkpoint.
MAX_WEIGHTS_BYTES = 8 * MAX_PARAMETERS + (256 << 20)
_READ_CHUNK = 16 << 20

_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
# How a pickle names os.system on each platform.
_MODULE_ALIASES = {"posix": "os", "nt": "os"}
_SAFE_GLOBALS = {"collections.OrderedDict", "argparse.Namespace"}


class _DeadlineFile(io.FileIO):
    """A regular file whose reads fail once READ_TIMEOUT_S has passed since it was opened."""

    def __init__(self, fd: int, path: Path):
        super().__init__(fd, "r")
        self.path, self.deadline = path, time.monotonic() + READ_TIMEOUT_S

    @property
    def expired(self) -> bool:
        return time.monotonic() > self.deadline

    def _check(self):
        if self.expired:
            raise TimeoutError(f"{self.path}: reading took longer than {READ_TIMEOUT_S:g} s")

    def read(self, size=-1):
        self._check()
        return super().read(size)

    def readinto(self, buffer):
        self._check()
        return super().readinto(buffer)


def _open_regular(path: Path, max_bytes: int) -> _DeadlineFile:
    """``path`` opened for reading, or a CheckpointError: only a regular file of at most ``max_bytes``."""
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer (regular files ignore the flag)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot open ({exc.strerror})") from None
    info = os.fstat(fd)
    kind = None if stat.S_ISREG(info.st_mode) else next(
        (name for test, name in _FILE_KINDS if test(info.st_mode)), "a special file")
    if kind or info.st_size > max_bytes:
        os.close(fd)
        if kind:
            raise NotACheckpointError(f"{path}: is {kind}, not a regular file")
        raise CheckpointError(f"{path}: {info.st_size} B is more than any accepted checkpoint part ({max_bytes} B)")
    return _DeadlineFile(fd, path)


def _read_regular(path: Path, max_bytes: int) -> bytes:
    with _open_regular(path, max_bytes) as f:
        try:
            chunks = iter(lambda: f.read(_READ_CHUNK), b"")  # chunked: the deadline is checked between reads
            return b"".join(chunks)
        except TimeoutError as exc:
            raise CheckpointError(str(exc)) from None


@dataclass
class CheckpointInfo:
    path: Path
    format: str            # "pth" or "huggingface"
    model_string: str


def _first(keys, n: int = 5) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _read_pth(path: Path, allow_pickle: bool):
    """The unpickled ``.pth``: its tensors read into memory (not mapped), globals limited unless trusted."""
    with _open_regular(path, MAX_WEIGHTS_BYTES) as f:
        try:
            if allow_pickle:
                log.warning("%s: loading a pickled checkpoint with trust_checkpoint: it can run code", path)
                return torch.load(f, map_location="cpu", weights_only=False, mmap=False)
            with torch.serialization.safe_globals([argparse.Namespace]):
                return torch.load(f, map_location="cpu", weights_only=True, mmap=False)
        except pickle.UnpicklingError as exc:
            imported = _refused_import(str(exc)) or _first_import(f)
            if imported:
                module, _, name = imported.rpartition(".")
                raise CheckpointError(
                    f"{path}: refused: it imports {_MODULE_ALIASES.get(module, module)}.{name}, and only tensors "
                    "and argparse.Namespace are loaded from an untrusted file; only if the file comes from a trusted "
                    "source, load it with allow_pickle=True (CLI --trust-checkpoint, node parameter "
                    "trust_checkpoint): unpickling it can run code") from None
            reason = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)", str(exc), re.S)
            raise CheckpointCorruptError(f"{path}: not a readable torch checkpoint (unpickling failed: "
                                         f"{reason.group(1)[:200] if reason else _first_line(exc)})") from None
        except Exception as exc:  # a hostile file can make the unpickler raise almost anything
            if f.expired:
                raise CheckpointError(f"{path}: reading took longer than {READ_TIMEOUT_S:g} s") from None
            raise CheckpointCorruptError(f"{path}: truncated or corrupt checkpoint ({_first_line(exc)})") from None


def _refused_import(message: str) -> Optional[str]:
    """The global torch's weights-only unpickler refused, from its message."""
    found = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)", message)
    return found.group(1) if found else None


def _first_import(f: io.FileIO) -> Optional[str]:
    """The first global beyond tensors that the pickle (or a torch zip's data.pkl) imports, read with pickletools
    (nothing is executed): names what torch only reports as an unsupported opcode (pickle protocols 4 and 5)."""
    strings = []
    try:
        f.seek(0)
        if zipfile.is_zipfile(f):
            with zipfile.ZipFile(f) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                with archive.open(name) as entry:
                    data = entry.read(_READ_CHUNK)
        else:
            f.seek(0)
            data = f.read(_READ_CHUNK)
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "STACK_GLOBAL"):
                found = arg.replace(" ", ".") if op.name == "GLOBAL" else ".".join(strings[-2:])
                if not (found.startswith("torch.") or found in _SAFE_GLOBALS):
                    return found
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # a damaged pickle, read up to the damage
        pass
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _model_string_of(obj, path: Path) -> str:
    if not isinstance(obj, dict):
        raise NotACheckpointError(f"{path}: not a DUSt3R checkpoint (found a {type(obj).__name__}, "
                                  "expected a dict with 'model' and 'args')")
    if "model" not in obj or not isinstance(obj["model"], dict):
        raise NotACheckpointError(f"{path}: not a DUSt3R checkpoint (no 'model' state dict; top-level keys: "
                                  f"{_first(map(str, obj.keys()))})")
    args = obj.get("args")
    model = getattr(args, "model", None) if args is not None else None
    if model is None and isinstance(args, dict):
        model = args.get("model")
    if not isinstance(model, str):
        raise NotACheckpointError(f"{path}: the checkpoint has no args.model constructor string; pass the "
                                  "architecture explicitly (model=...)")
    return model


def _normalise_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    # Checkpoints from models trained with a shared decoder lack the second branch: it starts as a copy.
    if not any(k.startswith("dec_blocks2.") for k in state):
        state.update({"dec_blocks2." + k[len("dec_blocks."):]: v for k, v in state.items() if k.startswith("dec_blocks.")})
    # safetensors cannot store shared tensors: restore whichever DPT alias name is missing.
    for key in list(state):
        if ".scratch.layer" in key and key.endswith("_rn.weight") and ALIAS_MARKER not in key:
            k = int(key.split(".scratch.layer")[1][0])
            alias = key.replace(f"scratch.layer{k}_rn.", f"{ALIAS_MARKER}{k - 1}.")
            state.setdefault(alias, state[key])
    return state


def build_network(cfg: ModelConfig, state: Dict[str, torch.Tensor], source: str = "checkpoint") -> Dust3rNetwork:
    """A network of ``cfg`` holding ``state``; key or shape mismatches raise StateDictMismatchError.

    The network is built without storage (meta device) and takes the state's tensors as they are, so
    loading never holds two copies of the weights. Non-finite weights raise CheckpointCorruptError.
    """
    net = _meta_network(cfg)
    expected = net.state_dict()
    state = _normalise_state_dict(state)
    state.setdefault("mask_token", torch.zeros(expected["mask_token"].shape))  # unused; some exports drop it
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_first(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_first(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es): {'; '.join(shapes[:5])}")
        raise StateDictMismatchError(f"{source} does not fit {cfg.to_string()}: " + "; ".join(parts))
    wrong_type = [f"{k} ({v.dtype}, {v.layout})" for k, v in state.items()
                  if not (v.is_floating_point() and v.layout == torch.strided)]
    if wrong_type:
        raise CheckpointCorruptError(f"{source}: {len(wrong_type)} weight(s) are not dense floating-point tensors: "
                                     f"{_first(wrong_type, 3)}")
    for key, value in state.items():  # caught here, not as NaN poses window after window
        bad = value.numel() - int(torch.isfinite(value).sum()) if value.is_floating_point() else 0
        if bad:
            raise CheckpointCorruptError(f"{source}: weight {key} holds {bad} non-finite value(s) (NaN or Inf)")
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, assign=True)
    return net.eval()


def _meta_network(cfg: ModelConfig) -> Dust3rNetwork:
    """The network of ``cfg`` without storage, refused when its parameter count is above MAX_PARAMETERS."""
    with torch.device("meta"):
        net = Dust3rNetwork(cfg)
    count = sum(p.numel() for p in net.parameters())
    if count > MAX_PARAMETERS:
        raise ModelConfigError(f"the architecture has {count / 1e6:.0f} M parameters, above the limit of "
                               f"{MAX_PARAMETERS / 1e6:.0f} M (the largest official network has 578 M)")
    return net


def _read_huggingface(folder: Path) -> Tuple[ModelConfig, Dict[str, torch.Tensor], str]:
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    for p in (config_path, weights_path):
        if not p.exists():
            raise NotACheckpointError(f"{folder}: a Hugging Face checkpoint folder needs config.json and "
                                      f"model.safetensors ({p.name} is missing)")
    try:
        kwargs = json.loads(_read_regular(config_path, MAX_CONFIG_BYTES))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointCorruptError(f"{config_path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise CheckpointCorruptError(f"{config_path}: nested too deeply to be a model configuration") from None
    if not isinstance(kwargs, dict):
        raise NotACheckpointError(f"{config_path}: expected a JSON object of constructor keywords")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()
              if not k.startswith("_") and k not in ("architectures", "model_type")}
    try:
        cfg = config_from_kwargs(kwargs)
    except ModelConfigError as exc:
        raise UnknownArchitectureError(f"{config_path}: {exc}") from None
    data = _read_regular(weights_path, MAX_WEIGHTS_BYTES)
    try:
        from safetensors.torch import load
        state = load(data)  # tensors in memory this process owns: nothing stays mapped from the file
    except Exception as exc:  # safetensors raises its own error types for truncated headers/data
        raise CheckpointCorruptError(f"{weights_path}: truncated or corrupt safetensors file "
                                     f"({_first_line(exc)})") from None
    return cfg, state, cfg.to_string()


def load_checkpoint(path: Union[str, Path], *, model: Optional[str] = None, allow_pickle: bool = False,
                    device: Union[str, torch.device] = "cpu") -> Tuple[Dust3rNetwork, CheckpointInfo]:
    """Network from an official ``.pth`` file or a Hugging Face folder.

    ``model`` (a preset name or constructor string) overrides the architecture stored in the file.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir() or path.suffix == ".safetensors":
        cfg, state, text = _read_huggingface(path if path.is_dir() else path.parent)
        fmt = "huggingface"
    else:
        if path.is_file() and path.stat().st_size == 0:
            raise CheckpointCorruptError(f"{path}: empty file")
        obj = _read_pth(path, allow_pickle)
        text = _model_string_of(obj, path) if model is None else None
        if not (isinstance(obj, dict) and isinstance(obj.get("model"), dict)):
            raise NotACheckpointError(f"{path}: not a DUSt3R checkpoint (no 'model' state dict)")
        state, fmt, cfg = obj["model"], "pth", None
    try:
        if model is not None:
            text, cfg = resolve_model(model)
        elif cfg is None:
            cfg = parse_model_string(text)
    except ModelConfigError as exc:
        raise UnknownArchitectureError(f"{path}: {exc}") from None
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise NotACheckpointError(f"{path}: the 'model' entry is not a tensor state dict")
    try:
        net = build_network(cfg, dict(state), source=str(path))
    except ModelConfigError as exc:
        raise UnknownArchitectureError(f"{path}: {exc}") from None
    return net.to(device), CheckpointInfo(path, fmt, text)


def save_checkpoint(net: Dust3rNetwork, path: Union[str, Path], fmt: str = "pth") -> Path:
    """Write ``net`` in the official ``.pth`` format or as a Hugging Face folder (``fmt='huggingface'``)."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    if fmt == "pth":
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": state, "args": argparse.Namespace(model=net.cfg.to_string())}, path)
        return path
    if fmt != "huggingface":
        raise ValueError(f"unknown checkpoint format {fmt!r} (expected 'pth' or 'huggingface')")
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in net.cfg.to_kwargs().items()}
    (path / "config.json").write_text(json.dumps(kwargs, indent=2, allow_nan=True))
    save_file({k: v.clone() for k, v in state.items() if ALIAS_MARKER not in k}, str(path / "model.safetensors"))
    return path


def random_network(model: str, seed: int = 0, device: Union[str, torch.device] = "cpu") -> Tuple[Dust3rNetwork, str]:
    """Recipe-v1 random network of a preset name or constructor string (smoke tests; meaningless output)."""
    from .recipe import fill_with_recipe

    text, cfg = resolve_model(model)
    net = _meta_network(cfg)  # every tensor is drawn by the recipe: skip the default initialisation
    net = fill_with_recipe(net.to_empty(device="cpu"), seed).eval()
    return net.to(device), text
