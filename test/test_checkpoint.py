"""Checkpoint loading, saving and every bad-checkpoint case."""
import argparse
import re

import pytest
import torch

from easi3r_ros.model.checkpoint import (CheckpointCorruptError, CheckpointError, CheckpointNotFoundError,
                                         NotACheckpointError, StateDictMismatchError, UnknownArchitectureError,
                                         load_checkpoint, random_network, save_checkpoint)
from easi3r_ros.model.config import PRESETS, ModelConfigError, parse_model_string
from fixtures import fixture_dir


@pytest.fixture(scope="module")
def micro():
    path = fixture_dir("loader_micro") / "checkpoint.pth"
    return path, torch.load(path, map_location="cpu", weights_only=False)


@pytest.mark.fixtures
def test_official_checkpoint_loads_and_saves_back_bit_identical(micro, tmp_path):
    path, original = micro
    net, info = load_checkpoint(path)
    assert info.format == "pth" and info.model_string == original["args"].model
    save_checkpoint(net, tmp_path / "copy.pth")
    again = torch.load(tmp_path / "copy.pth", map_location="cpu", weights_only=False)
    assert set(again["model"]) == set(original["model"])
    assert all(torch.equal(again["model"][k], original["model"][k]) for k in original["model"])
    assert again["args"].model == original["args"].model


def test_huggingface_folder_round_trip(tmp_path):
    net, _ = random_network("tiny-512-dpt", seed=3)  # DPT: exercises the shared-tensor aliases
    folder = save_checkpoint(net, tmp_path / "hf", fmt="huggingface")
    back, info = load_checkpoint(folder)
    assert info.format == "huggingface"
    assert back.cfg == net.cfg
    for k, v in net.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_missing_file():
    with pytest.raises(CheckpointNotFoundError, match="checkpoint not found: /nonexistent/x.pth"):
        load_checkpoint("/nonexistent/x.pth")


@pytest.mark.fixtures
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_files(micro, tmp_path, damage):
    data = micro[0].read_bytes()
    bad = tmp_path / "bad.pth"
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00not a checkpoint" * 50, "empty": b""}[damage])
    with pytest.raises(CheckpointCorruptError, match="bad.pth"):
        load_checkpoint(bad)


def test_corrupt_safetensors(tmp_path):
    net, _ = random_network("tiny-224-linear")
    folder = save_checkpoint(net, tmp_path / "hf", fmt="huggingface")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:1000])
    with pytest.raises(CheckpointCorruptError, match="model.safetensors"):
        load_checkpoint(folder)


@pytest.mark.parametrize("content, words", [
    ([1, 2, 3], "found a list"),
    ({"weights": {}}, "no 'model' state dict"),
    ({"model": {"a": torch.zeros(1)}}, "no args.model"),
])
def test_not_a_checkpoint(tmp_path, content, words):
    torch.save(content, tmp_path / "x.pth")
    with pytest.raises(NotACheckpointError, match=words):
        load_checkpoint(tmp_path / "x.pth")


@pytest.mark.fixtures
def test_unknown_architecture(micro, tmp_path):
    _, original = micro
    torch.save({"model": original["model"], "args": argparse.Namespace(model="CroCoNet(enc_depth=2)")}, tmp_path / "x.pth")
    with pytest.raises(UnknownArchitectureError, match="unknown architecture 'CroCoNet'"):
        load_checkpoint(tmp_path / "x.pth")


@pytest.mark.fixtures
def test_shape_and_key_mismatch_lists_offending_keys(micro, tmp_path):
    _, original = micro
    torch.save({"model": original["model"], "args": argparse.Namespace(model=PRESETS["tiny-224-linear"])}, tmp_path / "x.pth")
    with pytest.raises(StateDictMismatchError, match=r"120 missing key\(s\): dec_blocks\.1\.attn.*71 shape mismatch\(es\): mask_token \(1, 1, 64\) vs model \(1, 1, 128\)"):
        load_checkpoint(tmp_path / "x.pth")
    state = dict(original["model"])
    state["extra.weight"] = torch.zeros(2)
    del state["enc_norm.bias"]
    torch.save({"model": state, "args": original["args"]}, tmp_path / "y.pth")
    with pytest.raises(StateDictMismatchError, match=r"1 missing key\(s\): enc_norm.bias; 1 unexpected key\(s\): extra.weight"):
        load_checkpoint(tmp_path / "y.pth")


@pytest.mark.fixtures
def test_second_decoder_branch_is_copied_when_absent(micro, tmp_path):
    _, original = micro
    state = {k: v for k, v in original["model"].items() if not k.startswith("dec_blocks2.")}
    torch.save({"model": state, "args": original["args"]}, tmp_path / "x.pth")
    net, _ = load_checkpoint(tmp_path / "x.pth")
    assert torch.equal(net.state_dict()["dec_blocks2.0.attn.qkv.weight"], original["model"]["dec_blocks.0.attn.qkv.weight"])


@pytest.mark.fixtures
def test_pickled_objects_need_explicit_trust(micro, tmp_path):
    _, original = micro
    torch.save({"model": original["model"], "args": original["args"], "extra": argparse.ArgumentParser}, tmp_path / "x.pth")
    with pytest.raises(Exception, match="trusted source"):
        load_checkpoint(tmp_path / "x.pth")
    net, _ = load_checkpoint(tmp_path / "x.pth", allow_pickle=True)
    assert net.cfg.enc_depth == 1


# ------------------------------------------------------------------------ untrusted files (issue 10, items 2-4)
MICRO = ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', img_size=(64, 64), head_type='linear', output_mode='pts3d', "
         "enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=32, dec_depth=1, dec_num_heads=2)")

# Loads a checkpoint, then truncates the file and copies another network over it; the loaded weights must not move
# (a mapped file raised SIGBUS on the first access after truncation and swapped the weights after an overwrite).
_OWNERSHIP_CHILD = """
import shutil, sys, torch
from easi3r_ros.model.checkpoint import load_checkpoint
path, other = sys.argv[1:]
net, _ = load_checkpoint(path)
before = {k: v.clone() for k, v in net.state_dict().items()}
x = torch.rand(1, 3, 64, 64) * 2 - 1
out = net(x, x).pts1
target = path if path.endswith('.pth') else path + '/model.safetensors'
open(target, 'r+b').truncate(0)
assert torch.equal(net(x, x).pts1, out)
shutil.copyfile(other if other.endswith('.pth') else other + '/model.safetensors', target)
assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items()), 'weights changed with the file'
assert torch.equal(net(x, x).pts1, out)
"""


@pytest.mark.parametrize("fmt", ["pth", "huggingface"])
def test_loaded_network_owns_its_weights(tmp_path, fmt):
    import subprocess
    import sys
    from pathlib import Path
    suffix = ".pth" if fmt == "pth" else ""
    path = save_checkpoint(random_network(MICRO, seed=1)[0], tmp_path / f"a{suffix}", fmt=fmt)
    other = save_checkpoint(random_network(MICRO, seed=2)[0], tmp_path / f"b{suffix}", fmt=fmt)
    child = subprocess.run([sys.executable, "-c", _OWNERSHIP_CHILD, str(path), str(other)], capture_output=True,
                           text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
                           env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert child.returncode == 0, f"rc {child.returncode} (-7 = SIGBUS): {child.stderr[-2000:]}"


@pytest.mark.parametrize("old, new, words", [
    ("enc_depth=1", "enc_depth=3000000", "enc_depth=3000000 is above the limit of 48"),
    ("dec_embed_dim=32", "dec_embed_dim=65536", "dec_embed_dim=65536 is above the limit"),
    ("dec_num_heads=2", "dec_num_heads=1000", "dec_num_heads=1000 is above the limit"),
    ("(64, 64)", "(4096, 4096)", "img_size=(4096, 4096) must lie between"),
    ("(64, 64)", "(0, 64)", "img_size=(0, 64) must lie between"),
    ("(64, 64)", "(1024, 1024), patch_size=4", "makes 65536 tokens per image"),
])
def test_architecture_numbers_are_bounded_before_building(old, new, words):
    import time
    start = time.perf_counter()
    with pytest.raises(ModelConfigError, match=re.escape(words)):
        random_network(MICRO.replace(old, new))
    assert time.perf_counter() - start < 2


def test_parameter_and_activation_estimates_bound_what_the_numbers_allow():
    big = ("enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=32, dec_depth=1, dec_num_heads=2",
           "enc_embed_dim=2048, enc_depth=48, enc_num_heads=16, dec_embed_dim=1536, dec_depth=24, dec_num_heads=12")
    with pytest.raises(ModelConfigError, match=r"4239 M parameters, above the limit of 1200 M"):
        random_network(MICRO.replace(*big))
    with pytest.raises(ModelConfigError, match=r"GiB of activations per image pair"):
        parse_model_string(MICRO.replace(*big).replace("img_size=(64, 64), head_type='linear'",
                                                       "img_size=(1024, 1024), head_type='dpt', mlp_ratio=8"))
    for name in PRESETS:  # every official architecture stays within the limits
        parse_model_string(PRESETS[name])


@pytest.mark.parametrize("deep", ["-" * 3000 + "1", "(" * 1000 + "1" + ")" * 1000, "1" + " " * 10_000])
def test_deeply_nested_or_huge_model_strings_are_one_line_errors(deep):
    with pytest.raises(ModelConfigError) as info:
        parse_model_string(MICRO.replace("enc_depth=1", f"enc_depth={deep}"))
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_deeply_nested_config_json_is_a_one_line_error(tmp_path):
    folder = save_checkpoint(random_network(MICRO)[0], tmp_path / "hf", fmt="huggingface")
    (folder / "config.json").write_text('{"img_size": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CheckpointCorruptError, match="config.json: nested too deeply"):
        load_checkpoint(folder)


@pytest.mark.parametrize("value, count", [(float("nan"), 32), (float("inf"), 32), (-float("inf"), 32)])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, value, count):
    net, _ = random_network(MICRO)
    state = dict(net.state_dict())
    state["enc_norm.weight"] = torch.full_like(state["enc_norm.weight"], value)
    torch.save({"model": state, "args": argparse.Namespace(model=MICRO)}, tmp_path / "x.pth")
    with pytest.raises(CheckpointCorruptError, match=f"weight enc_norm.weight holds {count} non-finite value"):
        load_checkpoint(tmp_path / "x.pth")


def _load_within(path, seconds: float):
    """load_checkpoint's exception, from a thread: a load that blocks fails the test instead of hanging it."""
    import threading
    result = {}

    def load():
        try:
            load_checkpoint(path)
        except Exception as exc:  # handed back to the test, which asserts on its type and message
            result["error"] = exc

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"loading {path} blocked for more than {seconds} s"
    return result.get("error")


@pytest.mark.parametrize("part", ["checkpoint.pth", "config.json", "model.safetensors"])
def test_a_fifo_is_refused_at_once(tmp_path, part):
    import os
    folder = save_checkpoint(random_network(MICRO)[0], tmp_path / "hf", fmt="huggingface")
    target = tmp_path / part if part.endswith(".pth") else folder / part
    if target.exists():
        target.unlink()
    os.mkfifo(target)
    error = _load_within(target if part.endswith(".pth") else folder, 3)
    assert isinstance(error, NotACheckpointError) and f"{target}: is a FIFO, not a regular file" in str(error)


def test_a_directory_where_a_file_belongs_is_refused(tmp_path):
    folder = save_checkpoint(random_network(MICRO)[0], tmp_path / "hf", fmt="huggingface")
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").mkdir()
    with pytest.raises(NotACheckpointError, match="model.safetensors: is a directory, not a regular file"):
        load_checkpoint(folder)


def test_reading_has_a_time_limit(tmp_path, monkeypatch):
    import easi3r_ros.model.checkpoint as checkpoint
    path = save_checkpoint(random_network(MICRO)[0], tmp_path / "x.pth")
    folder = save_checkpoint(random_network(MICRO)[0], tmp_path / "hf", fmt="huggingface")
    monkeypatch.setattr(checkpoint, "READ_TIMEOUT_S", -1.0)
    for target in (path, folder):
        with pytest.raises(checkpoint.CheckpointError, match=r"reading took longer than -1 s"):
            load_checkpoint(target)


def test_code_carrying_pickle_is_refused_naming_the_import(tmp_path):
    import os

    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)

    torch.save({"model": {}, "args": argparse.Namespace(model=MICRO), "x": RunsCode()}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match=r"x.pth: refused: it imports os.system\b"):
        load_checkpoint(tmp_path / "x.pth")
    assert not (tmp_path / "ran").exists()


def test_trusted_pickle_is_logged_as_a_warning(tmp_path, caplog):
    net, _ = random_network(MICRO)
    torch.save({"model": net.state_dict(), "args": argparse.Namespace(model=MICRO), "x": argparse.ArgumentParser},
               tmp_path / "x.pth")
    with caplog.at_level("WARNING", logger="easi3r_ros.model.checkpoint"):
        load_checkpoint(tmp_path / "x.pth", allow_pickle=True)
    assert any(r.levelname == "WARNING" and "loading a pickled checkpoint with trust_checkpoint: it can run code"
               in r.getMessage() for r in caplog.records)
