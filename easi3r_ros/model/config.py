"""Network architecture from a checkpoint's constructor string, parsed without ``eval``.

Official DUSt3R / MonST3R checkpoints store ``args.model``, a Python call such as
``AsymmetricCroCo3DStereo(pos_embed='RoPE100', img_size=(512, 512), head_type='dpt', ...)``.
Only keyword literals are accepted (numbers, strings, booleans, None, tuples/lists, ``inf``);
anything else is refused with a message naming what was found.
"""
from __future__ import annotations

import ast
import math
import reprlib
from dataclasses import dataclass, field
from typing import Any, Dict, Tuple


class ModelConfigError(ValueError):
    """The constructor string does not describe a network this package can build."""


ACCEPTED_CLASSES = ("AsymmetricCroCo3DStereo",)
ACCEPTED_PATCH_EMBEDS = ("PatchEmbedDust3R", "ManyAR_PatchEmbed")
# Keywords that change nothing at inference (training switches, loader hints).
IGNORED_KEYWORDS = {"landscape_only", "freeze", "mask_ratio", "has_conf", "pretrained"}

# Upper bounds on what a checkpoint may ask this process to build. The largest official network (ViT-Large
# encoder 1024/24/16, base decoder 768/12/12, 512 px, 578 M parameters) fits with about 2x headroom on every
# number; a hostile or broken file asking for more is refused before anything is allocated.
MAX_ARCHITECTURE = {"patch_size": 32, "enc_embed_dim": 2048, "enc_depth": 48, "enc_num_heads": 32,
                    "dec_embed_dim": 1536, "dec_depth": 24, "dec_num_heads": 24}
MAX_IMG_SIDE = 1024
MAX_TOKENS = (MAX_IMG_SIDE // 16) ** 2       # patch tokens per image
MAX_MLP_RATIO = 8.0
MAX_PARAMETERS = 1_200_000_000
MAX_PAIR_ACTIVATION_BYTES = 3 << 30          # the official 512 DPT network: about 0.4 GiB

# What the decoder keeps in fp32 under a bf16/fp16 autocast (Dust3rNetwork.decode; the encoder always does).
KEEP_FP32 = ("cross-attention", "decoder", "nothing")


def check_keep_fp32(value: str) -> str:
    if value not in KEEP_FP32:
        raise ValueError(f"keep_fp32 must be one of {', '.join(KEEP_FP32)}, got {value!r}")
    return value

# Messages show found values through this: bounded in length and depth (a deeply nested value cannot overflow).
_short_repr = reprlib.Repr()
_short_repr.maxlevel, _short_repr.maxtuple, _short_repr.maxlist, _short_repr.maxdict = 2, 4, 4, 4
_short_repr.maxstring = _short_repr.maxother = 60
_short = _short_repr.repr


@dataclass(frozen=True)
class ModelConfig:
    """The architecture parameters that matter at inference, with AsymmetricCroCo3DStereo's defaults."""

    img_size: Tuple[int, int] = (224, 224)
    patch_size: int = 16
    patch_embed_cls: str = "PatchEmbedDust3R"
    rope_base: float = 100.0
    enc_embed_dim: int = 768
    enc_depth: int = 12
    enc_num_heads: int = 12
    dec_embed_dim: int = 512
    dec_depth: int = 8
    dec_num_heads: int = 16
    mlp_ratio: float = 4.0
    norm_im2_in_dec: bool = True
    head_type: str = "linear"
    output_mode: str = "pts3d"
    depth_mode: Tuple[Any, float, float] = ("exp", -math.inf, math.inf)
    conf_mode: Tuple[Any, float, float] = ("exp", 1.0, math.inf)
    extra: Dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def image_size(self) -> int:
        """Loader size (224 for linear-head models, 512 for DPT models): the longest img_size side."""
        return max(self.img_size)

    @property
    def attention_channels(self) -> int:
        return self.dec_depth * self.dec_num_heads

    @property
    def tokens(self) -> int:
        """Patch tokens of one image at img_size."""
        return (self.img_size[0] // self.patch_size) * (self.img_size[1] // self.patch_size)

    def pair_activation_bytes(self) -> int:
        """Rough fp32 activation peak of one image pair: each branch keeps every decoder layer's tokens for its
        head, the widest MLP hidden layer, and the heads' full-resolution maps (128 channels for DPT)."""
        width = max(self.enc_embed_dim, self.dec_embed_dim)
        kept = 2 * (self.dec_depth + 1) * self.tokens * width
        mlp = 2 * self.tokens * int(width * self.mlp_ratio)
        heads = 2 * self.img_size[0] * self.img_size[1] * (128 if self.head_type == "dpt" else 4)
        return 4 * (kept + mlp + heads)

    def to_kwargs(self) -> Dict[str, Any]:
        """Constructor keywords in the official spelling (also a Hugging Face ``config.json``)."""
        kw: Dict[str, Any] = {"pos_embed": f"RoPE{self.rope_base:g}"}
        if self.patch_embed_cls != "PatchEmbedDust3R":
            kw["patch_embed_cls"] = self.patch_embed_cls
        kw.update(img_size=tuple(self.img_size), head_type=self.head_type, output_mode=self.output_mode,
                  depth_mode=tuple(self.depth_mode), conf_mode=tuple(self.conf_mode),
                  enc_embed_dim=self.enc_embed_dim, enc_depth=self.enc_depth, enc_num_heads=self.enc_num_heads,
                  dec_embed_dim=self.dec_embed_dim, dec_depth=self.dec_depth, dec_num_heads=self.dec_num_heads)
        if self.patch_size != 16:
            kw["patch_size"] = self.patch_size
        if self.mlp_ratio != 4.0:
            kw["mlp_ratio"] = self.mlp_ratio
        if not self.norm_im2_in_dec:
            kw["norm_im2_in_dec"] = False
        return kw

    def to_string(self) -> str:
        """The constructor string as an official checkpoint stores it in ``args.model``."""
        parts = [f"{k}={_literal_repr(v)}" for k, v in self.to_kwargs().items()]
        return f"AsymmetricCroCo3DStereo({', '.join(parts)})"


def _literal_repr(value: Any) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, tuple):
        inner = ", ".join(_literal_repr(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, float) and value.is_integer():
        return repr(int(value))
    return repr(value)


_NAMES = {"inf": math.inf, "None": None, "True": True, "False": False}
MAX_MODEL_STRING = 4096


def _literal(node: ast.AST, keyword: str) -> Any:
    """Value of a literal expression node: constants, tuples/lists, ±inf, unary minus."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, keyword)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_literal(elt, keyword) for elt in node.elts)
    raise ModelConfigError(f"keyword {keyword!r} is not a literal: {_short(ast.unparse(node))}")


def parse_constructor_string(text: str) -> Tuple[str, Dict[str, Any]]:
    """(class name, keyword dict) of a call string made of keyword literals only."""
    if not isinstance(text, str) or not text.strip():
        raise ModelConfigError(f"expected a model constructor string, found {type(text).__name__} {_short(text)}")
    if len(text) > MAX_MODEL_STRING:
        raise ModelConfigError(f"model string of {len(text)} characters (an official one has about 300; "
                               f"at most {MAX_MODEL_STRING} accepted): {text[:80]!r}...")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError) as exc:
        reason = getattr(exc, "msg", None) or "nested too deeply"
        raise ModelConfigError(f"model string is not a Python call: {text[:200]!r} ({reason})") from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ModelConfigError(f"model string is not a plain constructor call: {text[:200]!r}")
    if call.args:
        raise ModelConfigError(f"{call.func.id}(...) has positional arguments; only keywords are accepted")
    kwargs: Dict[str, Any] = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise ModelConfigError("'**' expansion is not accepted in a model string")
        try:
            kwargs[kw.arg] = _literal(kw.value, kw.arg)
        except RecursionError:
            raise ModelConfigError(f"keyword {kw.arg!r} is nested too deeply to be a model parameter") from None
    return call.func.id, kwargs


def config_from_kwargs(kwargs: Dict[str, Any], class_name: str = "AsymmetricCroCo3DStereo") -> ModelConfig:
    """Validate constructor keywords (from a string or a Hugging Face config.json) into a ModelConfig."""
    if class_name not in ACCEPTED_CLASSES:
        raise ModelConfigError(
            f"unknown architecture {class_name!r}: this package runs DUSt3R/MonST3R networks "
            f"({', '.join(ACCEPTED_CLASSES)})")
    kw = dict(kwargs)
    values: Dict[str, Any] = {}
    extra = {k: kw.pop(k) for k in list(kw) if k in IGNORED_KEYWORDS}

    pos_embed = kw.pop("pos_embed", "cosine")
    if not (isinstance(pos_embed, str) and pos_embed.startswith("RoPE")):
        raise ModelConfigError(f"pos_embed={_short(pos_embed)} is not supported (DUSt3R models use 'RoPE100')")
    try:
        values["rope_base"] = float(pos_embed[len("RoPE"):])
    except ValueError:
        values["rope_base"] = math.nan
    if not (0 < values["rope_base"] < math.inf):
        raise ModelConfigError(f"pos_embed={pos_embed[:60]!r}: the RoPE base must be a positive number")

    patch_embed_cls = kw.pop("patch_embed_cls", "PatchEmbedDust3R")
    if patch_embed_cls not in ACCEPTED_PATCH_EMBEDS:
        raise ModelConfigError(f"patch_embed_cls={_short(patch_embed_cls)} is not supported "
                               f"(expected one of {', '.join(ACCEPTED_PATCH_EMBEDS)})")
    values["patch_embed_cls"] = patch_embed_cls

    img_size = kw.pop("img_size", 224)
    if isinstance(img_size, int) and not isinstance(img_size, bool) or (
            isinstance(img_size, float) and img_size.is_integer()):
        img_size = (int(img_size), int(img_size))
    if not (isinstance(img_size, tuple) and len(img_size) == 2 and all(isinstance(v, int) for v in img_size)):
        raise ModelConfigError(f"img_size={_short(img_size)} must be an int or a pair of ints")
    values["img_size"] = img_size

    for name in ("patch_size", "enc_embed_dim", "enc_depth", "enc_num_heads",
                 "dec_embed_dim", "dec_depth", "dec_num_heads"):
        if name in kw:
            value = kw.pop(name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ModelConfigError(f"{name}={_short(value)} must be a positive integer")
            values[name] = value
    if "mlp_ratio" in kw:
        values["mlp_ratio"] = _number(kw.pop("mlp_ratio"), "mlp_ratio")
    if "norm_im2_in_dec" in kw:
        values["norm_im2_in_dec"] = bool(kw.pop("norm_im2_in_dec"))

    head_type = kw.pop("head_type", "linear")
    if head_type not in ("linear", "dpt"):
        raise ModelConfigError(f"head_type={_short(head_type)} is not supported (expected 'linear' or 'dpt')")
    values["head_type"] = head_type
    output_mode = kw.pop("output_mode", "pts3d")
    if output_mode != "pts3d":
        raise ModelConfigError(f"output_mode={_short(output_mode)} is not supported (expected 'pts3d')")
    for name, modes in (("depth_mode", ("exp", "linear", "square")), ("conf_mode", ("exp", "sigmoid"))):
        if name in kw:
            mode = kw.pop(name)
            if not (isinstance(mode, tuple) and len(mode) == 3 and mode[0] in modes):
                raise ModelConfigError(f"{name}={_short(mode)} is not supported "
                                       f"(expected ({'|'.join(modes)}, vmin, vmax))")
            values[name] = (mode[0], _number(mode[1], name, finite=False), _number(mode[2], name, finite=False))

    if kw:
        raise ModelConfigError(f"unknown keyword(s) in the model string: {_short(', '.join(sorted(map(str, kw))))}")
    cfg = ModelConfig(extra=extra, **values)
    _check_bounds(cfg)
    _check_shapes(cfg)
    return cfg


def _number(value: Any, name: str, finite: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or (
            finite and math.isinf(value)):
        raise ModelConfigError(f"{name}: {_short(value)} is not a {'finite ' if finite else ''}number")
    return float(value)


def _check_bounds(cfg: ModelConfig) -> None:
    """Refuse architectures far beyond the official ones before anything is built (see MAX_ARCHITECTURE)."""
    for name, limit in MAX_ARCHITECTURE.items():
        if getattr(cfg, name) > limit:
            raise ModelConfigError(f"{name}={getattr(cfg, name)} is above the limit of {limit} (the largest "
                                   "official DUSt3R network uses half of that or less)")
    if not all(cfg.patch_size <= side <= MAX_IMG_SIDE for side in cfg.img_size):
        raise ModelConfigError(f"img_size={cfg.img_size} must lie between the patch size ({cfg.patch_size}) and "
                               f"{MAX_IMG_SIDE} px per side")
    if cfg.tokens > MAX_TOKENS:
        raise ModelConfigError(f"img_size={cfg.img_size} with patch_size={cfg.patch_size} makes {cfg.tokens} tokens "
                               f"per image, above the limit of {MAX_TOKENS}")
    if not 0 < cfg.mlp_ratio <= MAX_MLP_RATIO or int(min(cfg.enc_embed_dim, cfg.dec_embed_dim) * cfg.mlp_ratio) < 1:
        raise ModelConfigError(f"mlp_ratio={cfg.mlp_ratio:g} must be positive and at most {MAX_MLP_RATIO:g}")
    memory = cfg.pair_activation_bytes()
    if memory > MAX_PAIR_ACTIVATION_BYTES:
        raise ModelConfigError(f"this architecture needs about {memory / 2**30:.1f} GiB of activations per image "
                               f"pair, above the limit of {MAX_PAIR_ACTIVATION_BYTES / 2**30:.0f} GiB")


def _check_shapes(cfg: ModelConfig) -> None:
    for prefix in ("enc", "dec"):
        dim, heads = getattr(cfg, f"{prefix}_embed_dim"), getattr(cfg, f"{prefix}_num_heads")
        if dim % heads or (dim // heads) % 4:
            raise ModelConfigError(f"{prefix}_embed_dim={dim} must split into {heads} heads whose size is a "
                                   "multiple of 4 (2D RoPE rotates pairs in two halves)")
    if cfg.head_type == "dpt" and cfg.dec_depth <= 9:
        raise ModelConfigError(f"head_type='dpt' needs dec_depth > 9 (found {cfg.dec_depth})")


def parse_model_string(text: str) -> ModelConfig:
    """ModelConfig of a checkpoint's ``args.model`` string (never evaluated)."""
    class_name, kwargs = parse_constructor_string(text)
    return config_from_kwargs(kwargs, class_name)


# The official architectures, by the names users know them by.
PRESETS: Dict[str, str] = {
    "dust3r-512-dpt": (
        "AsymmetricCroCo3DStereo(pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', img_size=(512, 512), "
        "head_type='dpt', output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), "
        "enc_embed_dim=1024, enc_depth=24, enc_num_heads=16, dec_embed_dim=768, dec_depth=12, dec_num_heads=12)"),
    "dust3r-224-linear": (
        "AsymmetricCroCo3DStereo(pos_embed='RoPE100', img_size=(224, 224), head_type='linear', "
        "output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), enc_embed_dim=1024, "
        "enc_depth=24, enc_num_heads=16, dec_embed_dim=768, dec_depth=12, dec_num_heads=12)"),
    # Small architectures with the official layout, for tests and smoke runs (the fixtures' M1 and M2).
    "tiny-224-linear": (
        "AsymmetricCroCo3DStereo(pos_embed='RoPE100', img_size=(224, 224), head_type='linear', "
        "output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), enc_embed_dim=128, "
        "enc_depth=3, enc_num_heads=2, dec_embed_dim=128, dec_depth=3, dec_num_heads=2)"),
    "tiny-512-dpt": (
        "AsymmetricCroCo3DStereo(pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', img_size=(512, 512), "
        "head_type='dpt', output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), "
        "enc_embed_dim=128, enc_depth=3, enc_num_heads=2, dec_embed_dim=128, dec_depth=12, dec_num_heads=2)"),
}


def resolve_model(name_or_string: str) -> Tuple[str, ModelConfig]:
    """(constructor string, config) for a preset name or a constructor string."""
    text = PRESETS.get(name_or_string, name_or_string)
    if text is name_or_string and "(" not in name_or_string:
        raise ModelConfigError(f"unknown model {name_or_string!r}: use a preset ({', '.join(PRESETS)}) "
                               "or a constructor string as stored in a checkpoint's args.model")
    return text, parse_model_string(text)
