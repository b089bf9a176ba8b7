"""Training: the confidence loss, cross-attention correspondences, optimisation, resume, exports, CLI."""
import json
import math

import numpy as np
import pytest
import torch

from easi3r_ros.cli import main as easi3r_main
from easi3r_ros.model.checkpoint import load_checkpoint
from easi3r_ros.model.network import PairPrediction
from easi3r_ros.train.correspondence import CrossAttentionCapture, attention_match_loss, token_matches
from easi3r_ros.train.data import step_seed
from easi3r_ros.train.diagnostics import average_room, evaluate, format_report
from easi3r_ros.train.loss import confidence_loss
from easi3r_ros.train.schedule import WarmupCosine
from easi3r_ros.train.state import ResumeMismatchError
from easi3r_ros.train.trainer import TrainConfig, build_network, read_log, train

# A tiny network of the official layout: 112x112 input (7x7 tokens), small widths, two decoder layers.
TINY = ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', img_size=(112, 112), head_type='linear', "
        "output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), enc_embed_dim=32, "
        "enc_depth=1, enc_num_heads=2, dec_embed_dim=32, dec_depth=2, dec_num_heads=2)")
HW = (112, 112)


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world 4x4 of an optical-frame camera (z forward, y down) at ``eye`` looking at ``target``."""
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(np.array([0.0, -1.0, 0.0]), z)   # world y is up, the camera's y points down
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, y, z], axis=1)
    pose[:3, 3] = eye
    return pose


def _render(pose: np.ndarray, K: np.ndarray, hw, boxes):
    """Ray cast the inside of a room box plus solid boxes: (rgb (H,W,3) in [0,1], depth (H,W), world pts)."""
    h, w = hw
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    d = rays @ pose[:3, :3].T
    o = pose[:3, 3]
    lo, hi = np.array([-3.0, -1.5, -3.0]), np.array([3.0, 1.5, 3.0])
    with np.errstate(divide="ignore", invalid="ignore"):
        t_walls = (np.where(d > 0, hi, lo) - o) / d                          # per axis, to the wall ahead
        t = np.min(np.where(np.isfinite(t_walls), t_walls, np.inf), axis=-1)  # exit of the room
        for blo, bhi in boxes:                                              # slab test, nearest entry
            t0, t1 = (blo - o) / d, (bhi - o) / d
            tn, tf = np.minimum(t0, t1).max(-1), np.maximum(t0, t1).min(-1)
            hit = (tn <= tf) & (tn > 0)
            t = np.where(hit & (tn < t), tn, t)
    pts = o + d * t[..., None]
    rgb = 0.5 + 0.25 * np.sin(3.1 * pts[..., [0, 1, 2]] + np.array([0.0, 1.0, 2.0])) \
        + 0.2 * np.sin(7.3 * pts[..., [2, 0, 1]]) * np.cos(5.1 * pts[..., [1, 2, 0]])
    return np.clip(rgb, 0, 1), (pts - o) @ pose[:3, :3][:, 2], pts


def stand_in_pairs(seed: int, batch: int, hw=(224, 224), split: str = "train", device="cpu"):
    """A small stand-in with the signature and outputs of ``render_static_pairs`` (textured box rooms)."""
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    h, w = hw
    K = np.array([[0.8 * w, 0, (w - 1) / 2], [0, 0.8 * w, (h - 1) / 2], [0, 0, 1.0]])
    out = {k: [] for k in ("img1", "img2", "pts1", "pts2", "valid1", "valid2", "depth1", "depth2", "K",
                           "cam1_to_world", "cam2_to_world")}
    for _ in range(batch):
        centre = rng.uniform([-1.5, -0.5, -1.5], [1.5, 0.5, 1.5], size=(2, 3))
        boxes = [(c - 0.4, c + 0.4) for c in centre]
        eye = rng.uniform([-1, -0.3, -1], [1, 0.3, 1])
        target = eye + np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), rng.uniform(-0.2, 0.2), np.sin(a)])
        pose1 = _look_at(eye, target)
        pose2 = _look_at(eye + rng.uniform(-0.2, 0.2, 3), target + rng.uniform(-0.3, 0.3, 3))
        world_to_cam1 = np.linalg.inv(pose1)
        for k, pose in ((1, pose1), (2, pose2)):
            rgb, depth, pts = _render(pose, K, hw, boxes)
            out[f"img{k}"].append((rgb.transpose(2, 0, 1) - 0.5) / 0.5)
            out[f"pts{k}"].append(pts @ world_to_cam1[:3, :3].T + world_to_cam1[:3, 3])
            out[f"valid{k}"].append(np.isfinite(depth) & (depth > 0))
            out[f"depth{k}"].append(depth)
            out[f"cam{k}_to_world"].append(pose)
        out["K"].append(K)
    dtype = {k: torch.bool if k.startswith("valid") else torch.float32 for k in out}
    return {k: torch.as_tensor(np.stack(v), dtype=dtype[k], device=device) for k, v in out.items()}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pairs():
    return stand_in_pairs(3, 2, HW)


def perfect_prediction(batch, conf: float) -> PairPrediction:
    c1 = torch.full(batch["valid1"].shape, conf)
    return PairPrediction(batch["pts1"] * 2.5, c1, batch["pts2"] * 2.5, c1.clone())


def test_stand_in_geometry(pairs):
    """The test data is right: view-2 points (camera 1) moved to camera 2 have view-2 depth as z."""
    rel = torch.linalg.solve(pairs["cam2_to_world"].double(), pairs["cam1_to_world"].double())
    z = torch.einsum("bij,bhwj->bhwi", rel[:, :3, :3], pairs["pts2"].double())[..., 2] + rel[:, None, None, 2, 3]
    assert torch.allclose(z.float(), pairs["depth2"], atol=1e-4)


def test_loss_is_minus_alpha_log_c_for_a_perfect_prediction(pairs):
    """A prediction equal to the ground truth up to scale has l = 0: the loss is exactly -alpha log C."""
    for conf in (1.0, 50.0):
        loss, parts = confidence_loss(perfect_prediction(pairs, conf), pairs)
        assert parts["regr"].item() < 1e-6 and torch.isfinite(loss)
        assert loss.item() == pytest.approx(-0.2 * math.log(conf), abs=1e-5)


def test_loss_ignores_invalid_pixels_and_grows_with_error(pairs):
    batch = dict(pairs)
    batch["pts1"] = torch.where(batch["valid1"][..., None], batch["pts1"], torch.tensor(float("inf")))
    batch["valid1"] = batch["valid1"].clone()
    batch["valid1"][:, :10] = False
    batch["pts1"][:, :10] = float("nan")
    good, _ = confidence_loss(perfect_prediction(pairs, 1.0), batch)
    noisy = perfect_prediction(pairs, 1.0)
    noisy.pts2 = noisy.pts2 + 0.3 * torch.randn(noisy.pts2.shape, generator=torch.Generator().manual_seed(0))
    bad, parts = confidence_loss(noisy, batch)
    assert good.abs() < 1e-5 and torch.isfinite(bad) and bad > 0.01
    assert parts["regr1"] < parts["regr2"] / 10  # view 1 moves only through the shared normaliser


def test_schedule_warms_up_then_decays_to_the_floor():
    f = WarmupCosine(total=100, warmup=10, floor=0.01)
    values = [f(s) for s in range(101)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[9:], values[10:])) and values[100] == pytest.approx(0.01)


def test_token_matches_of_identical_views_are_the_same_tokens(pairs):
    same = dict(pairs, img2=pairs["img1"], pts2=pairs["pts1"], depth2=pairs["depth1"], valid2=pairs["valid1"],
                cam2_to_world=pairs["cam1_to_world"])
    target, ok = token_matches(same, patch=16)
    assert ok.float().mean() > 0.9
    assert torch.equal(target[ok], torch.arange(target.shape[1]).expand_as(target)[ok])
    target2, ok2 = token_matches(pairs, patch=16)          # a real pair: fewer matches, others than the identity
    assert 0.2 < ok2.float().mean() <= ok.float().mean()


def test_token_matches_land_on_the_same_surface(pairs):
    """A matched view-2 token shows the view-1 token's centre point: one of its pixels' points (pts2, camera 1)
    lies within 2 % of the depth of it."""
    target, ok = token_matches(pairs, patch=16)
    b, h, w, _ = pairs["pts1"].shape
    tokens2 = pairs["pts2"].reshape(b, h // 16, 16, w // 16, 16, 3).permute(0, 1, 3, 2, 4, 5).reshape(b, -1, 256, 3)
    centre = pairs["pts1"][:, 8::16, 8::16].reshape(b, -1, 3)
    seen = torch.gather(tokens2, 1, target[..., None, None].expand(-1, -1, 256, 3))
    gap = (seen - centre[:, :, None]).norm(dim=-1).min(dim=-1).values
    assert ok.sum() > 20 and (gap[ok] < 0.02 * centre[..., 2][ok]).all()


def test_captured_logits_are_the_modules_own(pairs):
    """The recomputed logits reproduce the network's query-mean statistic (the quantity Easi3R reads)."""
    net, _ = build_network(TrainConfig(model=TINY, out=None))
    net.eval()
    with torch.no_grad(), CrossAttentionCapture(net) as capture:
        pred = net(pairs["img1"], pairs["img2"], attention_stats=True)
        logits = capture.logits()
    heads = net.cfg.dec_num_heads
    for layer, lg in enumerate(logits):
        stat = pred.attn1[..., layer * heads:(layer + 1) * heads]                 # (B, h, w, heads)
        mean = lg.mean(dim=-2).transpose(1, 2).reshape(stat.shape)
        assert torch.allclose(mean, stat, atol=1e-5)
    target, ok = token_matches(pairs)
    assert torch.isfinite(attention_match_loss(logits, target, ok))


def small_config(tmp_path, **kw):
    base = dict(model=TINY, out=tmp_path, steps=6, batch=2, lr=2e-3, warmup=2, seed=1, device="cpu",
                val_pairs=0, log_every=1, save_every=3, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def fixed_data(seed, batch, hw, split, device):
    """The same small batch at every step (the loss must fall on it)."""
    return stand_in_pairs(0 if split == "train" else 1, batch, hw, split, device)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tmp_path):
    train(small_config(tmp_path, steps=12, attn_weight=0.1), data_fn=fixed_data, log=lambda s: None)
    rows = read_log(tmp_path / "train_log.csv")
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.1
    assert rows[-1]["attn_ce"] < rows[0]["attn_ce"]
    assert all(math.isfinite(r["loss"]) for r in rows)


def test_resume_gives_the_uninterrupted_weights(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    train(small_config(full), data_fn=stand_in_pairs, log=lambda s: None)
    cut = small_config(part, steps=6)
    with pytest.raises(KeyboardInterrupt):  # an interruption after the save at step 3
        calls = []

        def interrupted(seed, batch, hw, split, device):
            calls.append(seed)
            if len(calls) == 5:
                raise KeyboardInterrupt
            return stand_in_pairs(seed, batch, hw, split, device)
        train(cut, data_fn=interrupted, log=lambda s: None)
    assert torch.load(part / "last.pt", weights_only=True)["step"] == 3
    train(cut, data_fn=stand_in_pairs, log=lambda s: None)
    a = torch.load(full / "last.pt", weights_only=True)
    b = torch.load(part / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [r["step"] for r in read_log(part / "train_log.csv")] == list(range(1, 7))
    with pytest.raises(ResumeMismatchError, match="lr"):
        train(small_config(part, lr=1e-3), data_fn=stand_in_pairs, log=lambda s: None)


def test_time_budget_stops_early_and_the_same_run_resumes(tmp_path):
    summary = train(small_config(tmp_path, steps=4, max_seconds=0), data_fn=stand_in_pairs, log=lambda s: None)
    assert summary["steps"] == 1 and torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 1
    assert train(small_config(tmp_path, steps=4), data_fn=stand_in_pairs, log=lambda s: None)["steps"] == 4


def test_bf16_autocast_trains(tmp_path):
    train(small_config(tmp_path, steps=2, precision="bf16", attn_weight=0.1), data_fn=stand_in_pairs,
          log=lambda s: None)
    assert all(math.isfinite(r["loss"]) for r in read_log(tmp_path / "train_log.csv"))


def test_exports_load_back_with_identical_outputs_and_val_json(tmp_path, pairs):
    summary = train(small_config(tmp_path, steps=2, val_pairs=3), data_fn=stand_in_pairs, log=lambda s: None)
    assert set(summary["export"]) == {"pth", "huggingface"}
    val = json.loads((tmp_path / "val.json").read_text())
    assert val["validation"]["pairs"] == 3 and "view2_err_ignore_motion" in val["validation"]["geometry"]
    outs = []
    for path in (tmp_path / "model.pth", tmp_path / "hf"):
        net, info = load_checkpoint(path)
        assert info.model_string == net.cfg.to_string()
        with torch.no_grad():
            outs.append(net(pairs["img1"], pairs["img2"]))
    for name in ("pts1", "conf1", "pts2", "conf2"):
        assert torch.equal(getattr(outs[0], name), getattr(outs[1], name))


def test_diagnostics_rank_the_ground_truth_above_the_baselines(pairs):
    """Fed the ground truth as the 'network', view-2 error is 0 and beats ignore-motion and the average room."""

    class Oracle(torch.nn.Module):
        def __init__(self, net, batch):
            super().__init__()
            self.net, self.batch, self.cfg = net, batch, net.cfg

        @property
        def device(self):
            return torch.device("cpu")

        def forward(self, img1, img2):
            self.net(img1, img2)   # drives the cross-attention capture
            return perfect_prediction(self.batch, 3.0)

    net, _ = build_network(TrainConfig(model=TINY, out=None))
    oracle = Oracle(net, pairs)
    oracle.dec_blocks = net.dec_blocks
    report = evaluate(oracle, [pairs], room=average_room([stand_in_pairs(5, 4, HW)]))
    g = report["geometry"]
    assert g["view2_err"] < 1e-5 < g["view2_err_ignore_motion"] and g["beats_ignore_motion"]
    assert g["view2_err_average_room"] > g["view2_err"]
    assert report["depth"]["abs_rel"] < 1e-5 and report["depth"]["delta_1.25"] == 1.0
    a = report["attention"]
    assert len(a["match_exact"]) == 2 and len(a["match_exact"][0]) == 2 and a["tokens"] > 0
    assert 0 <= a["same_position"]["exact"] <= a["same_position"]["within1"] <= 1
    assert "cross-attention" in format_report(report)


def test_step_seeds_are_fixed_and_distinct():
    assert step_seed(0, 5) == step_seed(0, 5)
    assert len({step_seed(s, k) for s in range(3) for k in range(100)}) == 300


def test_train_help(capsys):
    with pytest.raises(SystemExit) as exc:
        easi3r_main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: easi3r train" in out and "--attn-weight" in out and "--init" in out


def test_cli_trains_on_the_renderer_and_resumes(tmp_path, capsys):
    """``easi3r train`` end to end on the real synthetic renderer; the same command again resumes (no new steps)."""
    argv = ["train", "--model", TINY, "--out", str(tmp_path), "--steps", "2", "--batch", "1", "--val-pairs", "2",
            "--device", "cpu", "--log-every", "1", "--quiet"]
    assert easi3r_main(argv) == 0
    assert {p.name for p in tmp_path.iterdir()} >= {"last.pt", "train_log.csv", "val.json", "model.pth", "hf"}
    assert easi3r_main(argv) == 0
    assert "resuming" in capsys.readouterr().err
    assert [r["step"] for r in read_log(tmp_path / "train_log.csv")] == [1, 2]
    with pytest.raises(SystemExit) as exc:
        easi3r_main(argv[:-1] + ["--batch", "2"])
    assert exc.value.code == 2 and "other settings" in capsys.readouterr().err
