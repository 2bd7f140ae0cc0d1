"""Kernels and bytes a real module dispatches, counted on meta tensors (no FLOPs run, any size).

Every aten call that returns a new tensor on the module's device, or writes one
in place (``add_``, ``masked_fill_``, ``copy_``, ``out=`` variants), counts as one
kernel; its bytes are the bytes of its tensor arguments (read) plus those of
its outputs (written). Views (ops whose result aliases an input) and host-side
ops (index arithmetic on CPU tensors) launch nothing and are skipped. This is
the eager implementation's own memory traffic, the quantity the analytic
``forward_cal_io`` estimates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: aten ops that alias their input although their schema says otherwise
ALIASING = {"_unsafe_view", "_reshape_alias", "lift_fresh", "detach", "alias"}
#: allocations: no kernel runs
ALLOCATING = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}


def _bytes(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, (list, tuple)):
        return sum(_bytes(y) for y in x)
    return 0


def _on(x: Any, device: str) -> bool:
    if isinstance(x, torch.Tensor):
        return x.device.type == device
    if isinstance(x, (list, tuple)):
        return any(_on(y, device) for y in x)
    return False


class DispatchMeter(TorchDispatchMode):
    """Counts kernels and bytes of the aten calls made while ``active`` (set by module hooks)."""

    def __init__(self, device: str = "meta") -> None:
        super().__init__()
        self.device = device
        self.active = False
        self.kernels: Counter[str] = Counter()
        self.read: Counter[str] = Counter()
        self.written: Counter[str] = Counter()
        #: ops computed on host tensors (index arithmetic): host time, no kernel
        self.host_ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if not self.active:
            return out
        name = func.__name__.split(".")[0]
        returns = func._schema.returns
        # in-place and out= ops return an alias they write (a kernel); views return one they do not
        writes = any(r.alias_info is not None and r.alias_info.is_write for r in returns)
        view = name in ALIASING or name in ALLOCATING or (
            not writes and any(r.alias_info is not None for r in returns))
        if not view and _on(out, self.device):
            self.kernels[name] += 1
            self.read[name] += _bytes(list(args)) + _bytes(list((kwargs or {}).values()))
            self.written[name] += _bytes(out)
        elif not view and _on(out, "cpu"):
            self.host_ops[name] += 1
        return out

    @property
    def total_kernels(self) -> int:
        """Kernels counted."""
        return sum(self.kernels.values())

    @property
    def total_bytes(self) -> int:
        """Bytes read + written."""
        return sum(self.read.values()) + sum(self.written.values())


def meter_module(root: torch.nn.Module, target: torch.nn.Module, run: Callable[[], Any]) -> DispatchMeter:
    """Run ``run()`` (which calls ``root``) and meter the calls of ``target`` only (first call)."""
    meter = DispatchMeter()
    done = {"n": 0}

    def pre(_m: Any, _a: Any) -> None:
        meter.active = done["n"] == 0

    def post(_m: Any, _a: Any, _o: Any) -> None:
        meter.active = False
        done["n"] += 1

    h1 = target.register_forward_pre_hook(pre)
    h2 = target.register_forward_hook(post)
    try:
        with torch.no_grad(), meter:
            run()
    finally:
        h1.remove()
        h2.remove()
    return meter
