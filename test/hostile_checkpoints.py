"""Generates the hostile-checkpoint set: files an attacker or an unlucky operator could hand to the loader.

Run ``python test/hostile_checkpoints.py OUT_DIR`` to write the set (and list it), or call :func:`generate`.
Every case is built here from a tiny random network, nothing is downloaded. Each must be refused by
``load_checkpoint`` with a one-line CheckpointError whose message holds ``words``, quickly, without running
code, without allocating what the file asks for and without blocking.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import struct
import sys
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from easi3r_ros.model.checkpoint import random_network, save_checkpoint  # noqa: E402

# The smallest network with the official layout (one block each side), 64 px: files of ~0.2 MB.
MICRO_MODEL = ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', img_size=(64, 64), head_type='linear', "
               "output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), enc_embed_dim=32, "
               "enc_depth=1, enc_num_heads=2, dec_embed_dim=32, dec_depth=1, dec_num_heads=2)")
MARKER = "payload_ran"  # the code-carrying pickles create this file beside themselves when unpickled


@dataclass
class HostileCase:
    path: Path
    words: str          # part of the expected one-line refusal


class _RunsCode:
    """Unpickling calls os.system: the classic payload of a malicious ``.pth``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _TensorOfShape:
    """Pickles as a tensor of ``shape`` over a 4-element storage (the shape is the file's claim)."""

    def __init__(self, shape):
        self.storage, self.shape = torch.zeros(4).untyped_storage(), shape

    def __reduce__(self):
        stride = (1,) * len(self.shape)
        typed = torch.storage.TypedStorage(wrap_storage=self.storage, dtype=torch.float32, _internal=True)
        return torch._utils._rebuild_tensor_v2, (typed, 0, self.shape, stride, False, OrderedDict())


def _args(model: str) -> argparse.Namespace:
    return argparse.Namespace(model=model)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def generate(out_dir) -> Dict[str, HostileCase]:
    """Write every hostile case under ``out_dir``; returns {case name: HostileCase}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net, _ = random_network(MICRO_MODEL, seed=0)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    good = save_checkpoint(net, out / "good.pth")
    cases: Dict[str, HostileCase] = {}

    def pth(name: str, words: str, content=None, *, model: str = MICRO_MODEL, weights=None, raw: bytes = None):
        path = out / f"{name}.pth"
        if raw is not None:
            path.write_bytes(raw)
        else:
            torch.save(content if content is not None else {"model": weights or state, "args": _args(model)}, path)
        cases[name] = HostileCase(path, words)

    def folder(name: str, words: str, config=None, weights: Callable[[Path], None] = None):
        """A valid folder with ``config`` (a dict of keyword overrides, JSON text or "fifo") and ``weights``
        (a function that creates the weights file) swapped in."""
        path = save_checkpoint(net, out / name, fmt="huggingface")
        config_path = path / "config.json"
        if isinstance(config, dict):
            config_path.write_text(json.dumps({**json.loads(config_path.read_text()), **config}))
        elif config is not None:
            config_path.unlink()
            if config == "fifo":
                os.mkfifo(config_path)
            else:
                config_path.write_text(config)
        if weights is not None:
            (path / "model.safetensors").unlink()
            weights(path / "model.safetensors")
        cases[name] = HostileCase(path, words)

    # code and pickled objects
    pth("runs_code", "refused: it imports os.system",
        {"model": state, "args": _args(MICRO_MODEL), "x": _RunsCode(f"touch {out / MARKER}")})
    for protocol in (2, 5):
        pth(f"runs_code_bare_pickle_{protocol}", "refused: it imports os.system",
            raw=pickle.dumps(_RunsCode(f"touch {out / MARKER}"), protocol=protocol))
    pth("other_class", "refused: it imports argparse.ArgumentParser",
        {"model": state, "args": _args(MICRO_MODEL), "x": argparse.ArgumentParser})
    # unbounded architectures: refused from the string, before anything is built
    pth("enc_depth_3M", "enc_depth=3000000 is above the limit",
        model=MICRO_MODEL.replace("enc_depth=1", "enc_depth=3000000"))
    pth("img_4096", "img_size=(4096, 4096)", model=MICRO_MODEL.replace("(64, 64)", "(4096, 4096)"))
    pth("img_negative", "img_size=(-64, 64)", model=MICRO_MODEL.replace("(64, 64)", "(-64, 64)"))
    pth("patch_1_tokens", "tokens per image",
        model=MICRO_MODEL.replace("img_size=(64, 64)", "img_size=(1024, 1024), patch_size=1"))
    pth("dims_at_limits", "parameters, above the limit", model=MICRO_MODEL.replace(
        "enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=32, dec_depth=1, dec_num_heads=2",
        "enc_embed_dim=2048, enc_depth=48, enc_num_heads=16, dec_embed_dim=1536, dec_depth=24, dec_num_heads=12"))
    pth("mlp_ratio_nan", "mlp_ratio", model=MICRO_MODEL.replace("img_size", "mlp_ratio=float('nan'), img_size"))
    pth("mlp_ratio_huge", "mlp_ratio", model=MICRO_MODEL.replace("img_size", "mlp_ratio=1e9, img_size"))
    pth("rope_inf", "RoPE base", model=MICRO_MODEL.replace("RoPE100", "RoPEinf"))
    pth("nested_model_string", "nested too deeply",
        model=MICRO_MODEL.replace("img_size=(64, 64)", "img_size=" + "-" * 3000 + "64"))
    pth("nested_parentheses", "too many nested parentheses",
        model=MICRO_MODEL.replace("(64, 64)", "(" * 1000 + ")" * 1000))
    pth("huge_model_string", "characters", model=MICRO_MODEL + " " * 10_000_000)
    # weights
    pth("nan_weight", "weight enc_norm.weight holds 32 non-finite", weights=_poisoned(state, "enc_norm.weight", ...))
    pth("inf_weight", "weight enc_blocks.0.attn.qkv.weight holds 1 non-finite",
        weights=_poisoned(state, "enc_blocks.0.attn.qkv.weight", (0, 0)))
    pth("int_weight", "not dense floating-point",
        weights={**state, "enc_norm.weight": torch.ones(32, dtype=torch.int64)})
    pth("storage_overflow", "corrupt", {"model": {**state, "enc_norm.weight": _TensorOfShape((2 ** 62, 2 ** 62))},
                                        "args": _args(MICRO_MODEL)})
    pth("shape_beyond_int64", "corrupt", {"model": {**state, "enc_norm.weight": _TensorOfShape((2 ** 70,))},
                                          "args": _args(MICRO_MODEL)})
    pth("shape_beyond_storage", "corrupt", {"model": {**state, "enc_norm.weight": _TensorOfShape((1 << 20,))},
                                            "args": _args(MICRO_MODEL)})
    pth("non_string_keys", "not a tensor state dict",
        {"model": {**state, 7: torch.zeros(1)}, "args": _args(MICRO_MODEL)})
    # damaged files
    data = good.read_bytes()
    pth("truncated", "corrupt", raw=data[: len(data) // 2])
    pth("empty", "empty file", raw=b"")
    pth("garbage", "unpickling failed: Unsupported operand", raw=b"\x80\x02garbage" * 100)
    pth("zip_bomb_entry", "corrupt", raw=_zip_with_huge_entry())
    # not regular files
    os.mkfifo(out / "fifo.pth")
    cases["fifo"] = HostileCase(out / "fifo.pth", "is a FIFO")
    (out / "dir.pth").mkdir(exist_ok=True)  # a directory named like a file is read as a (broken) folder
    cases["dir"] = HostileCase(out / "dir.pth", "config.json")
    cases["device"] = HostileCase(Path("/dev/zero"), "is a character device")
    # Hugging Face folders
    folder("hf_fifo_config", "is a FIFO", config="fifo")
    folder("hf_fifo_weights", "is a FIFO", weights=os.mkfifo)
    folder("hf_dir_weights", "is a directory", weights=lambda p: p.mkdir())
    folder("hf_nested_config", "nested too deeply", config='{"img_size": ' + _nested(200_000) + "}")
    folder("hf_nested_value", "must be an int or a pair of ints", config={"img_size": json.loads(_nested(500))})
    folder("hf_huge_config", "more than any accepted", config='{"x": "' + "a" * (2 << 20) + '"}')
    folder("hf_enc_depth", "enc_depth=3000000 is above the limit", config={"enc_depth": 3000000})
    folder("hf_img_size", "img_size=(4096, 4096)", config={"img_size": [4096, 4096]})
    folder("hf_mlp_ratio_nan", "mlp_ratio: nan is not a finite number", config={"mlp_ratio": float("nan")})
    folder("hf_depth_mode_list", "depth_mode", config={"depth_mode": ["exp", [1], "x"]})
    folder("hf_header_overflow", "corrupt", weights=lambda p: p.write_bytes(struct.pack("<Q", 2 ** 63) + b"{}"))
    folder("hf_shape_overflow", "corrupt", weights=lambda p: p.write_bytes(_safetensors_header(
        {"enc_norm.weight": {"dtype": "F32", "shape": [2 ** 62, 2 ** 62], "data_offsets": [0, 16]}}, 16)))
    return cases


def _poisoned(state: dict, key: str, where) -> dict:
    """``state`` with ``key`` set to NaN everywhere (``where`` = ...) or to +Inf at one index."""
    value = state[key].clone()
    value[where] = float("nan") if where is ... else float("inf")
    return {**state, key: value}


def _safetensors_header(header: dict, data_bytes: int) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + b"\0" * data_bytes


def _zip_with_huge_entry() -> bytes:
    """A torch-style zip whose pickle entry inflates to 64 MiB of zeros."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\0" * (64 << 20))
    return buf.getvalue()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    for name, case in generate(sys.argv[1]).items():
        print(f"{name:24s} {case.path}  (expects: {case.words})")
