"""Measured GEMM times by shape: what the eager model's matrix products take on the device.

The matmul ceiling of :mod:`llm_perf_opt.hardware.bench` is one large square
GEMM. The model's GEMMs are small or oddly shaped: CLIP's 257-token attention
runs its score and value products on alignment-1 kernels at 1-2% of the
ceiling, and its 257-row projections at 15-40% (kernel census,
``scripts/analytical/host_figures.py gemms``). So the bench times the GEMMs of
the model's own shapes, each as the model calls it, queued behind other work
so the device time per call is what is timed, not the host's issue time (a sleep kernel keeps the
device busy: it draws little power, so it leaves the clocks as they were; queued matmuls may not)::

    linear@1xMxNxK        torch.nn.functional.linear(x[M, K], w[N, K])          (mm, no bias)
    linear_bias@1xMxNxK   torch.nn.functional.linear(x[M, K], w[N, K], b[N])    (addmm)
    bmm_nt@BxMxNxK        a[B, M, K] @ c[B, N, K].transpose(-1, -2)            (attention scores)
    bmm_nn@BxMxNxK        a[B, M, K] @ c[B, K, N]                              (attention-weighted values)

FLOPs = 2 * B * M * N * K. Keys come from the analytic layers (``BaseLayer.op(...,
gemm=key)``); :func:`gemm_time` looks one up, taking the achieved rate of the
nearest measured shape of the same kind and alignment when the exact shape was
not measured.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from llm_perf_opt.errors import UserError

#: GEMM kinds and how the eager model calls them (module doc).
GEMM_KINDS: tuple[str, ...] = ("linear", "linear_bias", "bmm_nt", "bmm_nn")
#: GEMM calls timed per repeat, issued behind queued work (few enough for the host to stay ahead).
GEMM_CALLS = 20
#: Elements in a dimension that keeps a bf16 row 16-byte aligned (vectorised GEMM kernels need it).
ALIGN_ELEMS = 8

#: how far (sum of |log ratio| of B*M, N, K) a measured shape may be from an unmeasured one and still lend it
#: its rate: a factor 2 in all (a small GEMM's rate changes with its shape; further off, the roofline is used)
NEAREST_MAX_LOG_DISTANCE = math.log(2.0)

Dims = tuple[int, int, int, int]


def gemm_key(kind: str, batch: int, m: int, n: int, k: int) -> str:
    """``"<kind>@BxMxNxK"``; UserError for an unknown kind or a dimension < 1."""
    if kind not in GEMM_KINDS:
        raise UserError(f"unknown GEMM kind {kind!r}; known: {', '.join(GEMM_KINDS)}")
    dims = (batch, m, n, k)
    if any(int(d) != d or d < 1 for d in dims):
        raise UserError(f"GEMM {kind}: dimensions must be integers >= 1, got {dims}")
    return f"{kind}@{int(batch)}x{int(m)}x{int(n)}x{int(k)}"


def split_gemm_key(key: str) -> tuple[str, Dims]:
    """(kind, (B, M, N, K)) of a key; UserError when it is not one."""
    kind, _, shape = key.partition("@")
    parts = shape.split("x")
    if kind not in GEMM_KINDS or len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"not a GEMM key: {key!r} (expected <kind>@BxMxNxK, kind in {', '.join(GEMM_KINDS)})")
    b, m, n, k = (int(p) for p in parts)
    return kind, (b, m, n, k)


def is_gemm_key(key: str) -> bool:
    """Whether ``key`` parses as a GEMM key."""
    try:
        split_gemm_key(key)
    except UserError:
        return False
    return True


def gemm_flops(key: str) -> float:
    """2 * B * M * N * K."""
    _, (b, m, n, k) = split_gemm_key(key)
    return 2.0 * b * m * n * k


def _alignment(kind: str, dims: Dims) -> tuple[bool, ...]:
    """Which dimensions keep rows aligned: N and K for a linear (x's rows are K long, w's rows K, the
    output's N), M, N and K for a bmm (each is some operand's row length)."""
    _, m, n, k = dims
    tracked = (n, k) if kind.startswith("linear") else (m, n, k)
    return tuple(d % ALIGN_ELEMS == 0 for d in tracked)


def gemm_time(times_s: Mapping[str, float], key: str) -> float | None:
    """Device seconds per call of GEMM ``key`` from measured ``times_s`` (key -> seconds per call): the
    exact shape, else the FLOPs of ``key`` at the achieved rate of the nearest measured shape of the
    same kind and alignment within NEAREST_MAX_LOG_DISTANCE (distance: sum of |log ratio| over B*M, N, K);
    None when there is none."""
    if key in times_s:
        return times_s[key]
    kind, dims = split_gemm_key(key)
    align = _alignment(kind, dims)
    b, m, n, k = dims
    best: tuple[float, str] | None = None
    for other in times_s:
        if not is_gemm_key(other):
            continue
        okind, odims = split_gemm_key(other)
        if okind != kind or _alignment(okind, odims) != align:
            continue
        ob, om, on, ok = odims
        dist = abs(math.log(b * m / (ob * om))) + abs(math.log(n / on)) + abs(math.log(k / ok))
        if best is None or (dist, other) < best:
            best = (dist, other)
    if best is None or best[0] > NEAREST_MAX_LOG_DISTANCE:
        return None
    near = best[1]
    return times_s[near] * gemm_flops(key) / gemm_flops(near)


def gemm_program(key: str, device: str, dtype: Any = None) -> Callable[[], Any]:
    """A callable running GEMM ``key`` as the eager model calls it (module doc), on fresh random inputs."""
    import torch

    kind, (b, m, n, k) = split_gemm_key(key)
    dt = dtype or torch.bfloat16
    gen = torch.Generator(device=device).manual_seed(0)

    def rand(*shape: int) -> Any:
        return torch.randn(*shape, device=device, dtype=dt, generator=gen)

    if kind in ("linear", "linear_bias"):
        x, w = rand(b * m, k), rand(n, k)
        bias = rand(n) if kind == "linear_bias" else None
        return lambda: torch.nn.functional.linear(x, w, bias)
    a = rand(b, m, k)
    if kind == "bmm_nt":
        c = rand(b, n, k)
        return lambda: torch.matmul(a, c.transpose(-1, -2))
    c = rand(b, k, n)
    return lambda: torch.matmul(a, c)


#: (callable, calls) -> device seconds per call of one repeat
QueuedTimer = Callable[[Callable[[], Any], int], float]


#: GPU clock cycles the device spins (torch.cuda._sleep) before the timed calls: ~1 ms at 2 GHz, longer
#: than the host needs to issue GEMM_CALLS calls
SPIN_CYCLES = 2_000_000


def queued_cuda_timer(fn: Callable[[], Any], calls: int, *, keep_busy: Callable[[], Any] | None = None) -> float:
    """Device seconds per call of ``calls`` calls of ``fn`` issued while the device spins (a sleep kernel,
    which draws little power and leaves the clocks as they were; ``keep_busy`` queues other work instead),
    timed by CUDA events around the calls alone: the host is ahead, the events see the device's time."""
    import torch

    torch.cuda.synchronize()
    if keep_busy is None:
        torch.cuda._sleep(SPIN_CYCLES)
    else:
        keep_busy()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    torch.cuda.synchronize()
    return float(start.elapsed_time(end)) * 1e-3 / calls


def measure_gemms(keys: Iterable[str], *, device: str, repeats: int, calls: int = GEMM_CALLS,
                  timer: QueuedTimer = queued_cuda_timer, progress: Callable[[str], None] | None = None
                  ) -> dict[str, list[float]]:
    """Key -> device seconds per call of each repeat (after one warm-up repeat), for every distinct key."""
    if repeats < 1 or calls < 1:
        raise UserError(f"GEMM timing: repeats and calls must be >= 1, got {repeats} and {calls}")
    out: dict[str, list[float]] = {}
    for key in sorted(set(keys)):
        fn = gemm_program(key, device)
        timer(fn, calls)  # warm-up: kernel selection, workspace
        out[key] = [timer(fn, calls) for _ in range(repeats)]
        if progress:
            s = statistics.median(out[key])
            progress(f"gemm {key}: {s * 1e6:.2f} us per call, {gemm_flops(key) / s / 1e12:.1f} TFLOP/s")
        del fn
    return out
