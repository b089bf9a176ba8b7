"""Checkpoint loading, saving and every bad-checkpoint case."""
import argparse

import pytest
import torch

from easi3r_ros.model.checkpoint import (CheckpointCorruptError, CheckpointNotFoundError, NotACheckpointError,
                                         StateDictMismatchError, UnknownArchitectureError, load_checkpoint,
                                         random_network, save_checkpoint)
from easi3r_ros.model.config import PRESETS
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
