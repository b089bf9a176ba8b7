"""``train``: seeded, resumable training of a DUSt3R-shaped network on synthetic static pairs.

Run folder (``out``): ``last.pt`` (resumable state), ``train_log.csv`` (appended), and at the end
``val.json`` (held-out diagnostics), ``model.pth`` (official format) and ``hf/`` (Hugging Face folder),
both read back through the project's loader and checked to give identical outputs.
"""
from __future__ import annotations

import contextlib
import csv
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..model.checkpoint import load_checkpoint, save_checkpoint
from ..model.config import resolve_model
from ..model.network import Dust3rNetwork
from ..pipeline.window import resolve_device
from .correspondence import CrossAttentionCapture, attention_match_loss, token_matches
from .data import DataFn, default_data_fn, heldout_batches, room_batches, train_batch
from .diagnostics import average_room, evaluate, format_report
from .loss import LossWeights, confidence_loss
from .schedule import make_optimiser
from .state import STATE_NAME, check_settings, load_state, save_state, set_rng_states

LOG_NAME = "train_log.csv"
# loss = the optimised total; pointmap_loss = its confidence-regression part (comparable with and without
# --attn-weight); attn_ce = the correspondence cross-entropy before weighting (empty when off).
LOG_FIELDS = ("step", "loss", "pointmap_loss", "conf_term", "logc_term", "regr", "regr1", "regr2", "conf", "attn_ce",
              "grad_norm", "lr", "seconds", "pairs_per_s")
# Settings that define the trajectory: a resume with any of them changed is refused.
RESUME_KEYS = ("model", "init", "steps", "batch", "lr", "warmup", "min_lr_ratio", "seed", "precision", "alpha",
               "regr_weight", "attn_weight", "attn_layers", "attn_heads", "weight_decay", "clip", "train_size")


class TrainError(RuntimeError):
    """Training cannot go on; the message says why."""


@dataclass
class TrainConfig:
    model: Optional[str]                 # preset name or constructor string (None: taken from ``init``)
    out: Path
    steps: int = 2000
    batch: int = 8                       # pairs per step
    lr: float = 3e-4                     # peak learning rate
    warmup: int = 100                    # linear warm-up steps
    min_lr_ratio: float = 1e-2           # cosine floor, as a fraction of the peak
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"              # fp32 | bf16 (autocast)
    threads: Optional[int] = None        # torch CPU threads
    alpha: float = 0.2                   # confidence regulariser
    regr_weight: float = 0.0             # extra plain regression term
    attn_weight: float = 0.0             # auxiliary cross-attention correspondence loss (0: off)
    attn_layers: Optional[Tuple[int, ...]] = None   # decoder layers it supervises (None: all)
    attn_heads: Optional[Tuple[int, ...]] = None    # heads of those layers it supervises (None: all)
    weight_decay: float = 0.05
    clip: float = 1.0                    # max global gradient norm
    val_pairs: int = 64
    log_every: int = 10
    save_every: int = 200
    init: Optional[str] = None           # checkpoint to start from
    max_seconds: Optional[float] = None  # wall-clock budget of this invocation's steps: stop (saved, resumable)
                                         # after the step that reaches it, then validate and export as usual
    progress: bool = True
    train_size: Optional[int] = None     # square training resolution (None: the model's img_size); the network
                                         # is resolution-agnostic (RoPE, per-token heads), and smaller renders
                                         # buy more pairs per CPU second. Validation always runs at img_size.
    snapshots: Tuple[int, ...] = ()      # steps at which a Hugging Face snapshot is exported (compute curves)

    def settings(self) -> Dict[str, object]:
        d = asdict(self)
        d["out"] = str(self.out)
        d["snapshots"] = list(self.snapshots)
        for key in ("attn_layers", "attn_heads"):
            d[key] = list(d[key]) if d[key] is not None else None
        return d


def init_weights(net: nn.Module, seed: int) -> nn.Module:
    """ViT-style initialisation, seeded: truncated-normal (std 0.02) linear weights, zero biases, unit
    LayerNorms, Xavier-uniform patch embedding (as a linear map of the flattened patch), and convolutions
    (DPT heads) Kaiming-normal. PyTorch's default (Kaiming-uniform with a=sqrt(5)) gives transformers too
    large an initial residual stream to train stably from scratch."""
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, module in net.named_modules():
            if isinstance(module, nn.Linear):
                module.weight.copy_(torch.nn.init.trunc_normal_(torch.empty_like(module.weight), std=0.02,
                                                                a=-0.04, b=0.04, generator=gen))
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
            elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                w = torch.empty_like(module.weight)
                if name.endswith("patch_embed.proj"):
                    torch.nn.init.xavier_uniform_(w.view(w.shape[0], -1), generator=gen)
                else:
                    torch.nn.init.kaiming_normal_(w, nonlinearity="relu", generator=gen)
                module.weight.copy_(w)
                if module.bias is not None:
                    module.bias.zero_()
        if hasattr(net, "mask_token"):
            net.mask_token.copy_(torch.randn(net.mask_token.shape, generator=gen) * 0.02)
    return net


def build_network(config: TrainConfig) -> Tuple[Dust3rNetwork, str]:
    """(network on CPU, constructor string): fresh seeded weights, or the ``init`` checkpoint's."""
    if config.init:
        net, info = load_checkpoint(config.init)
        if config.model is not None and resolve_model(config.model)[1].to_string() != net.cfg.to_string():
            raise TrainError(f"--init {config.init} holds {net.cfg.to_string()}, not the --model given")
        return net.train(), info.model_string
    if config.model is None:
        raise TrainError("give --model (a preset or constructor string) or --init CKPT")
    text, cfg = resolve_model(config.model)
    return init_weights(Dust3rNetwork(cfg), config.seed).train(), text


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise TrainError(f"precision {precision!r}: expected fp32 or bf16")
    return contextlib.nullcontext()


class _CsvLog:
    """train_log.csv, appended; rows past the resumed step (written after the last save) are dropped first."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        if path.exists():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step") and int(r["step"]) <= resume_step]
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, LOG_FIELDS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
        else:
            with path.open("w", newline="") as f:
                csv.DictWriter(f, LOG_FIELDS).writeheader()

    def write(self, row: Dict[str, float]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, LOG_FIELDS, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def train(config: TrainConfig, data_fn: Optional[DataFn] = None,
          log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> Dict[str, object]:
    """Train (or resume) the run in ``config.out``; returns the final summary (also in ``val.json``)."""
    if config.threads:
        torch.set_num_threads(int(config.threads))
    data_fn = data_fn or default_data_fn()
    device = resolve_device(config.device)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_NAME
    settings = config.settings()

    saved = None
    if state_path.exists():
        saved = load_state(state_path)
        check_settings(saved["settings"], settings, RESUME_KEYS, state_path)
    net, model_string = build_network(config)
    heads = net.cfg.dec_num_heads
    if config.attn_heads is not None and not all(0 <= h < heads for h in config.attn_heads):
        raise TrainError(f"--attn-heads {config.attn_heads}: the decoder has heads 0..{heads - 1}")
    if saved is not None:
        net.load_state_dict(saved["model"])
    net.to(device)
    optimiser, scheduler = make_optimiser(net, config.lr, config.steps, config.warmup,
                                          weight_decay=config.weight_decay, floor=config.min_lr_ratio)
    start, seconds = 0, 0.0
    if saved is not None:
        optimiser.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        start, seconds = int(saved["step"]), float(saved["seconds"])
        set_rng_states(saved["rng"])
        log(f"easi3r train: resuming {out} at step {start}/{config.steps}")
    else:
        torch.manual_seed(config.seed)
    del saved
    hw = (config.train_size, config.train_size) if config.train_size else tuple(net.cfg.img_size)
    if hw[0] % net.cfg.patch_size:
        raise TrainError(f"--train-size {hw[0]} is not a multiple of the patch size {net.cfg.patch_size}")
    weights = LossWeights(alpha=config.alpha, regression=config.regr_weight)
    csv_log = _CsvLog(out / LOG_NAME, start)
    n_params = sum(p.numel() for p in net.parameters())
    log(f"easi3r train: {n_params / 1e6:.2f}M parameters on {device} ({config.precision}), "
        f"{config.batch} pairs/step, steps {start}..{config.steps}, model {model_string[:90]}...")

    capture = (CrossAttentionCapture(net, config.attn_layers) if config.attn_weight > 0
               else contextlib.nullcontext())

    def save(step: int) -> None:
        save_state(state_path, net=net, optimiser=optimiser, scheduler=scheduler, step=step, seconds=seconds,
                   settings=settings)

    bar = None
    if config.progress and start < config.steps:
        from tqdm import tqdm
        bar = tqdm(total=config.steps, initial=start, unit="step", file=sys.stderr, dynamic_ncols=True)
    sums: Dict[str, torch.Tensor] = {}
    window_steps, window_start = 0, time.perf_counter()
    began, done = window_start, start
    try:
        with capture:
            for step in range(start, config.steps):
                t0 = time.perf_counter()
                batch = train_batch(data_fn, config.seed, step, config.batch, hw, device)
                with _autocast(device, config.precision):  # the network only: losses run in fp32
                    pred = net(batch["img1"], batch["img2"])
                    logits = capture.logits() if config.attn_weight > 0 else None
                loss, parts = confidence_loss(pred, batch, weights)
                if logits is not None:
                    if config.attn_heads is not None:
                        logits = [lg[:, list(config.attn_heads)] for lg in logits]
                    target, ok = token_matches(batch, net.cfg.patch_size)
                    attn = attention_match_loss(logits, target, ok)
                    capture.clear()
                    loss = loss + config.attn_weight * attn
                    parts["attn_ce"] = attn.detach()
                parts["pointmap_loss"], parts["loss"] = parts["loss"], loss.detach()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                parts["grad_norm"] = torch.nn.utils.clip_grad_norm_(net.parameters(), config.clip)
                if not torch.isfinite(loss):
                    raise TrainError(f"step {step}: the loss is not finite ({loss.item()}); lower --lr or "
                                     "check the data (last saved state kept)")
                parts["lr"] = torch.tensor(scheduler.get_last_lr()[0])
                optimiser.step()
                scheduler.step()
                seconds += time.perf_counter() - t0
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v.float()
                window_steps += 1
                done = step + 1
                out_of_time = config.max_seconds is not None and time.perf_counter() - began >= config.max_seconds
                last = done == config.steps or out_of_time
                if done % config.log_every == 0 or last:
                    now = time.perf_counter()
                    row = {k: (v / window_steps).item() for k, v in sums.items()}
                    row.update(step=done, seconds=seconds,
                               pairs_per_s=window_steps * config.batch / max(now - window_start, 1e-9))
                    csv_log.write(row)
                    if bar is not None:
                        bar.set_postfix(loss=f"{row['loss']:.4f}", regr=f"{row['regr']:.3f}",
                                        conf=f"{row['conf']:.2f}", pps=f"{row['pairs_per_s']:.1f}",
                                        refresh=False)
                    sums, window_steps, window_start = {}, 0, now
                if done % config.save_every == 0 or last:
                    save(done)
                if done in config.snapshots:
                    save_checkpoint(net, out / "snapshots" / f"step_{done:06d}", fmt="huggingface")
                if bar is not None:
                    bar.update(1)
                if out_of_time and done < config.steps:
                    log(f"easi3r train: --max-seconds {config.max_seconds:g} reached at step {done}/{config.steps}; "
                        "the same command resumes")
                    break
    finally:
        if bar is not None:
            bar.close()
    return finish(net, config, data_fn, device, seconds, log, steps_done=done)


def finish(net: Dust3rNetwork, config: TrainConfig, data_fn: DataFn, device: torch.device, seconds: float,
           log: Callable[[str], None], steps_done: Optional[int] = None) -> Dict[str, object]:
    """Held-out diagnostics (val.json), official and Hugging Face exports, and their read-back check."""
    out = Path(config.out)
    hw = tuple(net.cfg.img_size)
    net.eval()
    room = average_room(room_batches(data_fn, hw, device)) if config.val_pairs else None
    report = (evaluate(net, heldout_batches(data_fn, config.val_pairs, hw, device), room=room,
                       weights=LossWeights(config.alpha, config.regr_weight), precision=config.precision)
              if config.val_pairs else {})
    if report:
        log(format_report(report))
    pth = save_checkpoint(net, out / "model.pth")
    hf = save_checkpoint(net, out / "hf", fmt="huggingface")
    export = verify_exports(net, [pth, hf], next(heldout_batches(data_fn, 2, hw, device)), device)
    steps_done = config.steps if steps_done is None else steps_done
    summary = {"model": net.cfg.to_string(), "steps": steps_done, "steps_planned": config.steps,
               "pairs_seen": steps_done * config.batch, "parameters": sum(p.numel() for p in net.parameters()),
               "train_seconds": seconds, "device": str(device), "settings": config.settings(),
               "validation": report, "export": export}
    (out / "val.json").write_text(json.dumps(summary, indent=2, allow_nan=True))
    log(f"easi3r train: wrote {out}/val.json, {pth.name}, {hf.name}/ (read back: identical outputs)")
    return summary


@torch.no_grad()
def verify_exports(net: Dust3rNetwork, paths: Sequence[Path], batch: Dict[str, torch.Tensor],
                   device: torch.device) -> Dict[str, object]:
    """Load each exported checkpoint with the project's loader and require bit-identical fp32 outputs."""
    net.eval()
    img1, img2 = batch["img1"].to(device), batch["img2"].to(device)
    ref = net(img1, img2)
    result: Dict[str, object] = {}
    for path in paths:
        loaded, info = load_checkpoint(path, device=device)
        got = loaded(img1, img2)
        diff = max((a - b).abs().max().item() for a, b in ((ref.pts1, got.pts1), (ref.conf1, got.conf1),
                                                            (ref.pts2, got.pts2), (ref.conf2, got.conf2)))
        if diff != 0.0 or info.model_string != net.cfg.to_string():
            raise TrainError(f"{path}: the reloaded network differs from the trained one (max |diff| {diff})")
        result[info.format] = {"path": str(path), "max_abs_diff": diff}
    return result


def read_log(path: Path) -> List[Dict[str, float]]:
    """Rows of a train_log.csv as floats (``step`` as int)."""
    with Path(path).open(newline="") as f:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in r.items() if v != ""}
                for r in csv.DictReader(f)]

