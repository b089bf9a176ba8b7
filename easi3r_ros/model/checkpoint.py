"""Loading and saving DUSt3R / MonST3R checkpoints.

Two formats:

* official ``.pth``: ``torch.save({'model': state_dict, 'args': argparse.Namespace(model="...")})``. The
  architecture comes from ``args.model``, parsed without ``eval``. ``.pth`` files are Python pickles: they
  are loaded with ``weights_only=True`` and only ``argparse.Namespace`` allowed; ``allow_pickle=True``
  lifts that for trusted files that carry other objects.
* Hugging Face folder: ``config.json`` (the constructor keywords) + ``model.safetensors``.
"""
from __future__ import annotations

import argparse
import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch

from .config import ModelConfig, ModelConfigError, config_from_kwargs, parse_model_string, resolve_model
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


@dataclass
class CheckpointInfo:
    path: Path
    format: str            # "pth" or "huggingface"
    model_string: str


def _first(keys, n: int = 5) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _torch_load(path: Path, weights_only: bool):
    # Memory-mapped: the tensors are read from the file as needed instead of held as a second copy.
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):  # legacy (non-zip) files cannot be mapped
            raise
        return torch.load(path, map_location="cpu", weights_only=weights_only)


def _read_pth(path: Path, allow_pickle: bool):
    try:
        if allow_pickle:
            return _torch_load(path, weights_only=False)
        with torch.serialization.safe_globals([argparse.Namespace]):
            return _torch_load(path, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text:
            found = text[text.index("Unsupported global"):].split(" was not")[0]
            raise CheckpointError(
                f"{path}: the checkpoint holds Python objects beyond tensors and argparse.Namespace ({found}); "
                "only if the file comes from a trusted source, load it with allow_pickle=True "
                "(CLI --trust-checkpoint, node parameter trust_checkpoint)") from None
        raise CheckpointCorruptError(f"{path}: not a readable torch checkpoint (unpickling failed)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CheckpointCorruptError(f"{path}: truncated or corrupt checkpoint ({first})") from None


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
    loading never holds two copies of the weights.
    """
    with torch.device("meta"):
        net = Dust3rNetwork(cfg)
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
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, assign=True)
    return net.eval()


def _read_huggingface(folder: Path) -> Tuple[ModelConfig, Dict[str, torch.Tensor], str]:
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    for p in (config_path, weights_path):
        if not p.exists():
            raise NotACheckpointError(f"{folder}: a Hugging Face checkpoint folder needs config.json and "
                                      f"model.safetensors ({p.name} is missing)")
    try:
        kwargs = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointCorruptError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(kwargs, dict):
        raise NotACheckpointError(f"{config_path}: expected a JSON object of constructor keywords")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()
              if not k.startswith("_") and k not in ("architectures", "model_type")}
    try:
        cfg = config_from_kwargs(kwargs)
    except ModelConfigError as exc:
        raise UnknownArchitectureError(f"{config_path}: {exc}") from None
    try:
        from safetensors.torch import load_file
        state = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types for truncated headers/data
        raise CheckpointCorruptError(f"{weights_path}: truncated or corrupt safetensors file ({exc})") from None
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
        if path.stat().st_size == 0:
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
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NotACheckpointError(f"{path}: the 'model' entry is not a tensor state dict")
    net = build_network(cfg, dict(state), source=str(path))
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
    with torch.device("meta"):  # every tensor is drawn by the recipe: skip the default initialisation
        net = Dust3rNetwork(cfg)
    net = fill_with_recipe(net.to_empty(device="cpu"), seed).eval()
    return net.to(device), text
