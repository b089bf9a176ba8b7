"""Adam steps of the global alignment: eager, or replayed from one CUDA graph.

On CUDA one alignment step is a few hundred small kernels over fixed shapes, so an eager loop is bound by
launch and Python overhead, not by the GPU (about 21 ms a step for a 512x288 window of 8 frames on an H200,
``benchmarks/results/gpu``). With ``graph=True`` the whole step — keeping the variables before the step, the
loss, its backward and Adam's update — is captured once into a CUDA graph after a few eager steps and then
replayed; Adam runs with ``capturable=True`` and a tensor learning rate written before each replay. The
choice is made once per alignment (CUDA, and a loss whose graph does not change between steps). A capture
that fails falls back to eager steps with the same optimiser state, and says so in :attr:`AdamSteps.path`.
"""
from __future__ import annotations

import logging
from typing import Callable, List, Optional, Tuple

import torch

log = logging.getLogger(__name__)

BETAS = (0.9, 0.9)
EAGER_BEFORE_CAPTURE = 3   # eager steps (on a side stream) before the capture: lazy CUDA/autograd set-up


class AdamSteps:
    """Adam over ``params`` minimising ``loss_fn() -> (loss, used_flow)``, one :meth:`step` at a time.

    ``keep_before``: :meth:`state_before` gives the variables as they were before the last step (the early
    stop keeps the best of them).
    """

    def __init__(self, params: List[torch.Tensor], loss_fn: Callable[[], Tuple[torch.Tensor, bool]], lr: float,
                 keep_before: bool = False, graph: bool = False):
        self.params = params
        self.loss_fn = loss_fn
        self.keep_before = keep_before
        self.graph = graph and params[0].device.type == "cuda"
        self._capture_failed: Optional[str] = None
        self._before: Optional[List[torch.Tensor]] = None
        self._steps = 0
        self._captured: Optional[torch.cuda.CUDAGraph] = None
        self._loss: Optional[torch.Tensor] = None
        if self.graph:
            self._lr = torch.tensor(float(lr), dtype=torch.float32, device=params[0].device)
            self.opt = torch.optim.Adam(params, lr=self._lr, betas=BETAS, capturable=True)
            self._before_buf = [torch.empty_like(p) for p in params]
            self._side = torch.cuda.Stream()         # the eager steps before the capture run on it
        else:
            self._lr = None
            self.opt = torch.optim.Adam(params, lr=lr, betas=BETAS)

    @property
    def path(self) -> str:
        """"cuda-graph" once steps are replayed from a capture, else "eager" (with why, if the capture failed)."""
        if self._captured is not None:
            return "cuda-graph"
        return f"eager (capture failed: {self._capture_failed})" if self._capture_failed else "eager"

    def set_lr(self, lr: float) -> None:
        if self._lr is not None:
            self._lr.fill_(lr)
        else:
            for group in self.opt.param_groups:
                group["lr"] = lr

    def state_before(self) -> List[torch.Tensor]:
        """Copies of the variables before the last step (requires ``keep_before``)."""
        if self._captured is not None:
            return [b.clone() for b in self._before_buf]
        return self._before

    def _eager(self) -> Tuple[torch.Tensor, bool]:
        if self.keep_before:
            self._before = [p.detach().clone() for p in self.params]
        self.opt.zero_grad(set_to_none=True)
        loss, used = self.loss_fn()
        loss.backward()
        self.opt.step()
        return loss, used

    def _capture(self) -> None:
        self.opt.zero_grad(set_to_none=True)   # backward inside the capture allocates the grads in its pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for buf, p in zip(self._before_buf, self.params):
                buf.copy_(p.detach())
            loss, _ = self.loss_fn()
            loss.backward()
            self.opt.step()
        self._captured, self._loss = graph, loss

    def step(self) -> Tuple[float, bool]:
        """One step; returns the loss of the variables before it and whether the flow term was in it."""
        self._steps += 1
        if not self.graph:
            loss, used = self._eager()
            return float(loss.detach()), used
        if self._captured is None and self._steps <= EAGER_BEFORE_CAPTURE:
            self._side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self._side):
                loss, used = self._eager()
                value = float(loss.detach())
            torch.cuda.current_stream().wait_stream(self._side)
            return value, used
        if self._captured is None:
            try:
                self._capture()
            except Exception as exc:  # capture unsupported here: eager steps give the same result
                log.warning("CUDA graph capture of the alignment step failed (%s: %s); continuing eagerly",
                            type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
                self.graph, self._capture_failed = False, type(exc).__name__
                torch.cuda.synchronize()
                loss, used = self._eager()
                return float(loss.detach()), used
        self._captured.replay()
        return float(self._loss.detach()), False
