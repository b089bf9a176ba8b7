"""The network against the reference fixtures, and its fused paths against the naive ones."""
import glob

import numpy as np
import pytest
import torch

from easi3r_ros.model import Dust3rNetwork, ModelConfigError, Reweighting, parse_model_string, resolve_model
from easi3r_ros.model.blocks import attend
from easi3r_ros.model.config import PRESETS
from easi3r_ros.model.preprocess import load_rgb, preprocess_image
from easi3r_ros.model.recipe import fill_with_recipe, recipe_digest
from fixtures import load_fixture

PIPELINE_FIXTURES = ["tiny_linear_vtest", "tiny_dpt_synthetic", "ga_synthetic_geometry"]
K = 2  # the fixtures store raw outputs of the first two ordered edges


def point_error(ours, ref):
    """Per-pixel ||dp|| / (||p|| + 1), the fixture README's point metric."""
    ours = np.asarray(ours)
    return (np.linalg.norm(ours - ref, axis=-1) / (np.linalg.norm(ref, axis=-1) + 1)).max()


def recipe_network(meta):
    net = Dust3rNetwork(parse_model_string(meta["weights"]["model_str"])).eval()
    return fill_with_recipe(net, meta["weights"]["seed"])


def token_static(masks):
    """Pixel masks (N, H, W) -> (N, tokens) True where no pixel of the 16x16 patch is dynamic."""
    pooled = torch.nn.functional.max_pool2d(torch.as_tensor(masks).float()[:, None], 16)[:, 0]
    return pooled.flatten(1) == 0


# --- configuration ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["dust3r-512-dpt", "dust3r-224-linear"])
def test_official_strings_parse_and_round_trip(name):
    cfg = parse_model_string(PRESETS[name])
    assert cfg.enc_embed_dim == 1024 and cfg.dec_depth == 12 and cfg.attention_channels == 144
    assert parse_model_string(cfg.to_string()) == cfg


def test_monst3r_style_extra_keywords_are_accepted():
    cfg = parse_model_string(PRESETS["dust3r-512-dpt"][:-1] + ", landscape_only=False, freeze='encoder')")
    assert cfg.head_type == "dpt" and cfg.extra == {"landscape_only": False, "freeze": "encoder"}


@pytest.mark.parametrize("text, words", [
    ("__import__('os').system('true')", "not a plain constructor call"),
    ("AsymmetricCroCo3DStereo(img_size=__import__('os').getcwd())", "not a literal"),
    ("AsymmetricMASt3R(pos_embed='RoPE100')", "unknown architecture 'AsymmetricMASt3R'"),
    ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', colour='red')", "unknown keyword(s) in the model string: 'colour'"),
    ("AsymmetricCroCo3DStereo(pos_embed='cosine')", "pos_embed='cosine' is not supported"),
    ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', head_type='dpt', dec_depth=8)", "dec_depth > 9"),
    ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', **{'a': 1})", "'**' expansion"),
    ("not python (", "not a Python call"),
])
def test_bad_model_strings_are_refused_with_what_was_found(text, words):
    with pytest.raises(ModelConfigError, match=None) as info:
        parse_model_string(text)
    assert words in str(info.value)


def test_unknown_preset_names_the_presets():
    with pytest.raises(ModelConfigError, match="dust3r-512-dpt"):
        resolve_model("dust3r-1024")


# --- recipe weights and preprocessing --------------------------------------------------------------

@pytest.mark.fixtures
@pytest.mark.parametrize("name", PIPELINE_FIXTURES + ["loader_micro"])
def test_recipe_reproduces_fixture_digest(name):
    _, meta, _ = load_fixture(name)
    net = recipe_network(meta)
    check = meta["weights_check"]
    assert len(net.state_dict()) == check["n_state_dict_tensors"]
    assert recipe_digest(net.state_dict()) == check["sha256"]
    for alias, target in check["aliases"].items():  # DPT aliases share the aliased tensor
        assert net.state_dict()[alias].data_ptr() == net.state_dict()[target].data_ptr()


@pytest.mark.fixtures
@pytest.mark.parametrize("name", PIPELINE_FIXTURES)
def test_preprocessing_is_exact(name):
    arrays, meta, path = load_fixture(name)
    frames = sorted(glob.glob(str(path / "frames" / "*.png")))
    out = [preprocess_image(load_rgb(f), meta["image_size"]) for f in frames]
    assert torch.equal(torch.stack([t for t, _ in out]), torch.from_numpy(arrays["input_imgs"]))
    assert all(info.network_hw == tuple(arrays["true_shape"][0]) for _, info in out)


@pytest.mark.parametrize("hw, size, expected", [
    ((360, 640), 512, (288, 512)), ((480, 640), 512, (384, 512)), ((500, 500), 512, (384, 512)),
    ((640, 360), 512, (512, 288)),  # portrait stays portrait
    ((360, 640), 224, (224, 224)), ((640, 360), 224, (224, 224)),
])
def test_preprocessing_sizes(hw, size, expected):
    tensor, info = preprocess_image(np.zeros(hw + (3,), np.uint8), size)
    assert tuple(tensor.shape[1:]) == expected == info.network_hw


def test_camera_mapping_of_masks_and_intrinsics():
    _, info = preprocess_image(np.zeros((360, 640, 3), np.uint8), 224)
    mask = np.ones(info.network_hw, bool)
    full = info.mask_to_camera(mask)
    assert full.shape == (360, 640)
    cols = np.flatnonzero(full.any(0))  # the centre crop covers the middle 360 columns
    assert abs(cols[0] - 140) <= 1 and abs(cols[-1] - 499) <= 1
    K = np.array([[200.0, 0, 112], [0, 200.0, 112], [0, 0, 1]])
    Kc = info.intrinsics_to_camera(K)
    assert info.resized_hw == (224, 398) and info.crop_box == (87, 0, 311, 224)
    sx = 640 / 398  # the resize rounds the long side
    assert Kc[0, 0] == pytest.approx(200 * sx) and Kc[1, 1] == pytest.approx(200 * 360 / 224)
    # pixel centres: network column c sits at camera column (c + 87 + 0.5) * sx - 0.5
    assert Kc[0, 2] == pytest.approx((112 + 87 + 0.5) * sx - 0.5)


# --- network vs reference --------------------------------------------------------------------------

@pytest.mark.fixtures
@pytest.mark.parametrize("name", ["tiny_linear_vtest", pytest.param("tiny_dpt_synthetic", marks=pytest.mark.slow)])
def test_network_matches_reference_both_passes(name):
    arrays, meta, _ = load_fixture(name)
    net = recipe_network(meta)
    dpt = net.cfg.head_type == "dpt"
    rtol = 2e-4 if dpt else 3e-5
    x = torch.from_numpy(arrays["input_imgs"])
    edges = torch.from_numpy(arrays["edges"])
    with torch.no_grad():
        enc = net.encode(x)
        assert np.abs(enc.reshape(arrays["encoder_feat"].shape).numpy() - arrays["encoder_feat"]).max() < 2e-5
        static = token_static(arrays["pass1_dynamic_masks"])
        for p in ("pass1", "pass2"):
            reweight = None
            if p == "pass2":
                reweight = Reweighting(static[edges[:, 0]], static[edges[:, 1]])
            # all edges for the attention maps (decoder only), heads for the stored first K edges
            stats = net.decode(enc[edges[:, 0]], enc[edges[:, 1]], x.shape[-2:], attention_stats=True,
                               heads=False, reweight=reweight)
            for view, ours in (("view1", stats.attn1), ("view2", stats.attn2)):
                assert np.abs(ours.numpy() - arrays[f"{p}_cross_atten_maps_k_{view}"]).max() < 2e-5
            if reweight is not None:
                reweight = Reweighting(reweight.query_static[:K], reweight.key_static[:K])
            full = net.decode(enc[edges[:K, 0]], enc[edges[:K, 1]], x.shape[-2:], reweight=reweight)
            assert point_error(full.pts1, arrays[f"{p}_raw_pred1_pts3d"]) < rtol
            assert point_error(full.pts2, arrays[f"{p}_raw_pred2_pts3d_in_other_view"]) < rtol
            for ours, key in ((full.conf1, "pred1_conf"), (full.conf2, "pred2_conf")):
                ref = arrays[f"{p}_raw_{key}"]
                assert (np.abs(ours.numpy() - ref) / ref).max() < rtol


@pytest.mark.fixtures
def test_loader_micro_pair_matches_reference():
    from easi3r_ros.model.checkpoint import load_checkpoint

    arrays, _, path = load_fixture("loader_micro")
    net, _ = load_checkpoint(path / "checkpoint.pth")
    x = torch.from_numpy(arrays["input_imgs"])
    with torch.no_grad():
        pred = net(x[:1], x[1:], attention_stats=True)
        enc = net.encode(x[:1])
    assert point_error(pred.pts1[0], arrays["pred1_pts3d"]) < 3e-5
    assert point_error(pred.pts2[0], arrays["pred2_pts3d_in_other_view"]) < 3e-5
    assert (np.abs(pred.conf1[0].numpy() - arrays["pred1_conf"]) / arrays["pred1_conf"]).max() < 3e-5
    assert (np.abs(pred.conf2[0].numpy() - arrays["pred2_conf"]) / arrays["pred2_conf"]).max() < 3e-5
    assert np.abs(pred.attn1[0].numpy() - arrays["cross_atten_maps_k_view1"]).max() < 2e-5
    assert np.abs(pred.attn2[0].numpy() - arrays["cross_atten_maps_k_view2"]).max() < 2e-5
    assert np.abs(enc.reshape(14, 14, -1).numpy() - arrays["encoder_feat_view1"]).max() < 2e-5


# --- fused paths -----------------------------------------------------------------------------------

def test_fused_attention_and_statistics_equal_the_naive_path():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 40, 16, generator=g, dtype=torch.float64) for _ in range(3))
    rw = Reweighting(torch.rand(3, 40, generator=g) > 0.3, torch.rand(3, 40, generator=g) > 0.4)
    for reweight in (None, rw):
        fused, stat_f = attend(q, k, v, reweight=reweight, logit_mean=True)
        naive, stat_n = attend(q, k, v, reweight=reweight, logit_mean=True, naive=True)
        torch.testing.assert_close(fused, naive, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(stat_f.double(), stat_n, rtol=1e-5, atol=1e-6)
    # re-weighting is "zero static-query -> dynamic-key probabilities, no renormalisation"
    probs = ((q @ k.transpose(-1, -2)) / 4).softmax(-1)
    probs = probs * (~rw.query_static[:, None, :, None] | rw.key_static[:, None, None, :])
    torch.testing.assert_close(attend(q, k, v, reweight=rw)[0], probs @ v)


def test_encode_once_decode_many_equals_pairwise_forward():
    net = fill_with_recipe(Dust3rNetwork(parse_model_string(PRESETS["tiny-224-linear"])), 7).eval()
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        enc = net.encode(x)
        cached = net.decode(enc[[0, 2]], enc[[1, 0]], (224, 224), attention_stats=True)
        direct = net(x[[0, 2]], x[[1, 0]], attention_stats=True, naive=True)
    for name in ("pts1", "conf1", "pts2", "conf2", "attn1", "attn2"):
        torch.testing.assert_close(getattr(cached, name), getattr(direct, name), rtol=1e-4, atol=1e-4)


def test_cross_attention_stays_fp32_under_autocast_when_asked():
    """``keep_fp32="cross-attention"``: under a bf16 autocast the cross-attention layers compute in fp32 (their
    outputs and Easi3R's statistics equal a plain fp32 cross-attention on the same inputs), the rest stays bf16."""
    from easi3r_ros.model.blocks import CrossAttention
    from easi3r_ros.model.rope import RoPE2D, grid_positions

    torch.manual_seed(0)
    attn = CrossAttention(32, 2, RoPE2D(100.0)).eval()
    pos = grid_positions(4, 5)
    x, y = torch.randn(2, 20, 32), torch.randn(2, 20, 32)
    with torch.no_grad():
        plain, plain_stat = attn(x, y, y, pos, pos, logit_mean=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reduced, reduced_stat = attn(x, y, y, pos, pos, logit_mean=True)
            full, full_stat = attn(x, y, y, pos, pos, logit_mean=True, full_precision=True)
    assert reduced.dtype == torch.bfloat16 and full.dtype == torch.float32
    torch.testing.assert_close(full, plain, rtol=0, atol=0)
    torch.testing.assert_close(full_stat, plain_stat, rtol=0, atol=0)
    assert float((reduced.float() - plain).abs().max()) > 1e-4     # bf16 is measurably different
    net = fill_with_recipe(Dust3rNetwork(parse_model_string(PRESETS["tiny-224-linear"])), 7).eval()
    enc = net.encode(torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))).detach()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        a = net.decode(enc[[0]], enc[[1]], (224, 224), attention_stats=True, heads=False)
        b = net.decode(enc[[0]], enc[[1]], (224, 224), attention_stats=True, heads=False, keep_fp32="cross-attention")
    assert not torch.equal(a.attn1, b.attn1)       # the flag reaches every decoder block


def test_keep_fp32_decoder_reduces_only_the_heads():
    """``keep_fp32="decoder"`` under a bf16 autocast: the attention statistics are exactly fp32's (the masks cannot
    change), the pointmaps come from bf16 heads (close to fp32's, not equal); an unknown value is refused."""
    net = fill_with_recipe(Dust3rNetwork(parse_model_string(PRESETS["tiny-224-linear"])), 5).eval()
    enc = net.encode(torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))).detach()
    with torch.no_grad():
        fp32 = net.decode(enc[[0, 1]], enc[[1, 0]], (224, 224), attention_stats=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            heads = net.decode(enc[[0, 1]], enc[[1, 0]], (224, 224), attention_stats=True, keep_fp32="decoder")
            cross = net.decode(enc[[0, 1]], enc[[1, 0]], (224, 224), attention_stats=True, keep_fp32="cross-attention")
    for name in ("attn1", "attn2"):
        assert torch.equal(getattr(heads, name), getattr(fp32, name))
        assert not torch.equal(getattr(cross, name), getattr(fp32, name))
    for name in ("pts1", "pts2"):
        err = float((getattr(heads, name).float() - getattr(fp32, name)).abs().max())
        assert 0 < err <= 0.05 * float(getattr(fp32, name).abs().max())
    with pytest.raises(ValueError, match="keep_fp32"):
        net.decode(enc[[0]], enc[[1]], (224, 224), keep_fp32="heads")


def test_dpt_handles_odd_token_grids():
    """A 3:2 image at size 512 gives 21 token rows: the stride-2 DPT path is cropped back to the finer layers."""
    net = fill_with_recipe(Dust3rNetwork(parse_model_string(PRESETS["tiny-512-dpt"])), 0).eval()
    x, _ = preprocess_image(np.full((427, 640, 3), 100, np.uint8), 512)
    assert tuple(x.shape[1:]) == (336, 512)
    with torch.no_grad():
        pred = net(x[None], x[None])
    assert tuple(pred.pts1.shape) == (1, 336, 512, 3) and torch.isfinite(pred.pts1).all()
