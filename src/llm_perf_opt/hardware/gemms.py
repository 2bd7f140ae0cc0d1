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

FLOPs = 2 * B * M * N * K. The MoE layers' routed experts are timed as one call,
since most of their kernels are not GEMMs (the sort of the T * k (token, expert)
pairs, gathers, the sentinel masks, the routing-weight scaling, the un-permute and
the sum: 2.9 of Base b4's 5.0 ms of experts kernels in the H200 census,
``scripts/analytical/host_figures.py kernels``, docs/results-h200.md section 10)::

    experts_grouped_mm@ExKxTxHxI   transformers' grouped_mm experts forward of this model's MoE
                                   (E experts of width I, top-k, T tokens of width H), routed by a
                                   random router as the model with random weights routes;
                                   FLOPs = 6 * T * k * H * I

and so is the decoder's rotary embedding (ten elementwise kernels on strided views and
broadcast operands)::

    rope@BxTxHqxHkvxD              transformers' apply_rotary_pos_emb of this model on q and k as
                                   the attention makes them (projections of B x T tokens viewed as
                                   B x heads x T x D), cos and sin of B x T x D; no tensor-core FLOPs

and so is the MoE router (casts of x and the gate weight to fp32, an fp32 GEMM, softmax, top-k:
Base b4's 0.36 ms of router kernels in the H200 census, 0.16 of them the fp32 GEMM, which the
roofline charges at the bf16 matmul ceiling)::

    moe_router@TxHxExK             the model's own top-k router module on T tokens of width H
                                   (E experts, top-k), random gate weight; FLOPs = 2 * T * H * E

Keys come from the analytic layers (``BaseLayer.op(..., gemm=key)``,
``BaseLayer.timed_call``); :func:`gemm_time` looks one up, taking the achieved rate
of the nearest measured shape of the same kind and alignment when the exact shape
was not measured (calls timed whole: interpolated in T between timed token counts).
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from llm_perf_opt.errors import UserError

#: Matrix-product kinds and how the eager model calls them (module doc): key dims B x M x N x K.
MATMUL_KINDS: tuple[str, ...] = ("linear", "linear_bias", "bmm_nt", "bmm_nn")
#: Calls timed whole (module doc): kind -> (its key's dims, indices of the dims whose product is the token
#: count interpolated between timed keys: T for the experts and the router, which see B x T tokens flattened;
#: B and T for rope).
CALL_KINDS: dict[str, tuple[str, tuple[int, ...]]] = {"experts_grouped_mm": ("ExKxTxHxI", (2,)),
                                                      "rope": ("BxTxHqxHkvxD", (0, 1)),
                                                      "moe_router": ("TxHxExK", (0,))}
#: Calls of a call kind per timed repeat: a routed-experts call issues ~50 kernels, and the host blocks once
#: about a thousand launches are pending (the timer needs the host ahead of the device)
CALL_KIND_CALLS = 5
#: Every kind a timed key may have.
GEMM_KINDS: tuple[str, ...] = MATMUL_KINDS + tuple(CALL_KINDS)
#: Dimensions in a key of each kind.
KIND_DIMS: dict[str, int] = {**{k: 4 for k in MATMUL_KINDS}, **{k: len(v[0].split("x")) for k, v in CALL_KINDS.items()}}
#: A call's token count T may be interpolated between timed ones at most this far apart (ratio).
COUNT_INTERPOLATE_MAX_RATIO = 4.0
#: GEMM calls timed per repeat, issued behind queued work (few enough for the host to stay ahead).
GEMM_CALLS = 20
#: Elements in a dimension that keeps a bf16 row 16-byte aligned (vectorised GEMM kernels need it).
ALIGN_ELEMS = 8

#: how far (sum of |log ratio| of B*M, N, K) a measured shape may be from an unmeasured one and still lend it
#: its rate: a factor 2 in all (a small GEMM's rate changes with its shape; further off, the roofline is used)
NEAREST_MAX_LOG_DISTANCE = math.log(2.0)

Dims = tuple[int, ...]


def _dims_text(kind: str) -> str:
    return CALL_KINDS[kind][0] if kind in CALL_KINDS else "BxMxNxK"


def gemm_key(kind: str, *dims: int) -> str:
    """``"<kind>@BxMxNxK"`` (calls timed whole: the dims of CALL_KINDS); UserError for an unknown kind, a
    wrong number of dimensions or a dimension < 1."""
    if kind not in GEMM_KINDS:
        raise UserError(f"unknown GEMM kind {kind!r}; known: {', '.join(GEMM_KINDS)}")
    if len(dims) != KIND_DIMS[kind] or any(int(d) != d or d < 1 for d in dims):
        raise UserError(f"GEMM {kind}: expected {KIND_DIMS[kind]} integer dimensions >= 1 "
                        f"({_dims_text(kind)}), got {dims}")
    return f"{kind}@" + "x".join(str(int(d)) for d in dims)


@functools.lru_cache(maxsize=1 << 16)
def split_gemm_key(key: str) -> tuple[str, Dims]:
    """(kind, dims) of a key: (B, M, N, K), or the dims of a call kind (CALL_KINDS); UserError when it is
    not one (answers kept: the layers tag the same shapes in every tree they build)."""
    kind, _, shape = key.partition("@")
    parts = shape.split("x")
    if kind not in GEMM_KINDS or len(parts) != KIND_DIMS[kind] or not all(p.isdigit() and int(p) > 0
                                                                          for p in parts):
        calls = ", ".join(f"{k}@{v[0]}" for k, v in CALL_KINDS.items())
        raise UserError(f"not a GEMM key: {key!r} (expected <kind>@BxMxNxK with kind in "
                        f"{', '.join(MATMUL_KINDS)}, or {calls})")
    return kind, tuple(int(p) for p in parts)


def is_gemm_key(key: str) -> bool:
    """Whether ``key`` parses as a GEMM key."""
    try:
        split_gemm_key(key)
    except UserError:
        return False
    return True


@functools.lru_cache(maxsize=1 << 16)
def gemm_flops(key: str) -> float:
    """Tensor-core FLOPs per call: 2 * B * M * N * K; experts: 6 * T * k * H * I (gate-up and down
    products of each pair); router: 2 * T * H * E (its fp32 GEMM); rope: 0."""
    kind, dims = split_gemm_key(key)
    if kind == "experts_grouped_mm":
        _e, k, t, h, i = dims
        return 6.0 * t * k * h * i
    if kind == "moe_router":
        t, h, e, _k = dims
        return 2.0 * t * h * e
    if kind in CALL_KINDS:
        return 0.0
    b, m, n, kk = dims
    return 2.0 * b * m * n * kk


def _alignment(kind: str, dims: Dims) -> tuple[bool, ...]:
    """Which dimensions keep rows aligned: N and K for a linear (x's rows are K long, w's rows K, the
    output's N), M, N and K for a bmm (each is some operand's row length)."""
    _, m, n, k = dims
    tracked = (n, k) if kind.startswith("linear") else (m, n, k)
    return tuple(d % ALIGN_ELEMS == 0 for d in tracked)


class _TimesIndex:
    """The timed keys of one ``times_s`` mapping parsed once, grouped by kind, and the answers given so far
    (:func:`gemm_time` is asked for the same shapes by every decode step the timeline model builds)."""

    def __init__(self, times_s: Mapping[str, float], fingerprint: int) -> None:
        self.times_s = times_s
        self.fingerprint = fingerprint
        self.by_kind: dict[str, list[tuple[str, Dims, float]]] = {}
        for other, secs in times_s.items():
            if is_gemm_key(other):
                kind, dims = split_gemm_key(other)
                self.by_kind.setdefault(kind, []).append((other, dims, secs))
        self.answers: dict[str, float | None] = {}


_INDEXES: dict[int, _TimesIndex] = {}


def _index(times_s: Mapping[str, float]) -> _TimesIndex:
    """The :class:`_TimesIndex` of ``times_s`` (rebuilt when the mapping is another one or its items changed)."""
    fingerprint = hash(frozenset(times_s.items()))
    idx = _INDEXES.get(id(times_s))
    if idx is None or idx.times_s is not times_s or idx.fingerprint != fingerprint:
        if len(_INDEXES) >= 32:
            _INDEXES.clear()
        idx = _INDEXES[id(times_s)] = _TimesIndex(times_s, fingerprint)
    return idx


def gemm_time(times_s: Mapping[str, float], key: str) -> float | None:
    """Device seconds per call of GEMM ``key`` from measured ``times_s`` (key -> seconds per call): the
    exact shape, else the FLOPs of ``key`` at the achieved rate of the nearest measured shape of the
    same kind and alignment within NEAREST_MAX_LOG_DISTANCE (distance: sum of |log ratio| over B*M, N, K),
    a call kind's key from the timed token counts (:func:`_call_time`); None when there is none."""
    if key in times_s:
        return times_s[key]
    idx = _index(times_s)
    if key not in idx.answers:
        idx.answers[key] = _estimate(idx, key)
    return idx.answers[key]


def _estimate(idx: _TimesIndex, key: str) -> float | None:
    """:func:`gemm_time` of a key not timed."""
    times_s = idx.times_s
    kind, dims = split_gemm_key(key)
    if kind in CALL_KINDS:
        return _call_time(idx, kind, dims)
    align = _alignment(kind, dims)
    b, m, n, k = dims
    best: tuple[float, str] | None = None
    for other, odims, _secs in idx.by_kind.get(kind, ()):
        if _alignment(kind, odims) != align:
            continue
        ob, om, on, ok = odims
        dist = abs(math.log(b * m / (ob * om))) + abs(math.log(n / on)) + abs(math.log(k / ok))
        if best is None or (dist, other) < best:
            best = (dist, other)
    if best is None or best[0] > NEAREST_MAX_LOG_DISTANCE:
        return None
    near = best[1]
    return times_s[near] * gemm_flops(key) / gemm_flops(near)


def _call_time(index: _TimesIndex, kind: str, dims: Dims) -> float | None:
    """Seconds per call of a call kind's key not timed, from timed keys of the same kind and other dims, by
    token count n (CALL_KINDS; of the keys with one count, the one whose split is nearest): linear in n
    between the nearest timed counts around it (at most COUNT_INTERPOLATE_MAX_RATIO apart); else, the nearest timed count within a factor 2, the line through it
    and the next timed count on the same side (a call has a fixed cost; the proportional scaling when there is
    no second count or the line is not positive); None when no timed count is within a factor 2."""
    idx = CALL_KINDS[kind][1]

    def split(d: Dims) -> tuple[int, Dims]:
        return math.prod(d[i] for i in idx), tuple(v for i, v in enumerate(d) if i not in idx)

    n, rest = split(dims)
    # per timed token count, the key whose split of it (rope: B x T) is nearest the wanted one
    best: dict[int, tuple[float, str, float]] = {}
    for other, odims, secs in index.by_kind.get(kind, ()):
        on, orest = split(odims)
        if orest == rest:
            cand = (sum(abs(math.log(odims[i] / dims[i])) for i in idx), other, secs)
            if on not in best or cand[:2] < best[on][:2]:
                best[on] = cand
    timed = {c: v[2] for c, v in best.items()}
    below = max((c for c in timed if c < n), default=None)
    above = min((c for c in timed if c > n), default=None)
    if below is not None and above is not None and above / below <= COUNT_INTERPOLATE_MAX_RATIO:
        w = (n - below) / (above - below)
        return timed[below] * (1.0 - w) + timed[above] * w
    near = min((c for c in timed if max(c / n, n / c) <= 2.0), key=lambda c: (abs(math.log(c / n)), c),
               default=None)
    if near is None:
        return None
    side = [c for c in timed if (c < near if near < n else c > near)]
    if side:
        second = min(side, key=lambda c: abs(math.log(c / near)))
        slope = (timed[near] - timed[second]) / (near - second)
        line = timed[near] + slope * (n - near)
        if slope >= 0 and line > 0:
            return line
    return timed[near] * n / near


def gemm_program(key: str, device: str, dtype: Any = None) -> Callable[[], Any]:
    """A callable running GEMM ``key`` as the eager model calls it (module doc), on fresh random inputs."""
    import torch

    kind, dims = split_gemm_key(key)
    dt = dtype or torch.bfloat16
    if kind == "experts_grouped_mm":
        from llm_perf_opt.models.deepseek_ocr.modeling import routed_experts_program

        e, top_k, t, h, i = dims
        return routed_experts_program(experts=e, top_k=top_k, tokens=t, hidden=h, intermediate=i,
                                      device=device, dtype=dt, experts_implementation="grouped_mm")
    if kind == "rope":
        from llm_perf_opt.models.deepseek_ocr.modeling import rotary_program

        b, t, hq, hkv, d = dims
        return rotary_program(batch=b, tokens=t, heads_q=hq, heads_kv=hkv, head_dim=d, device=device, dtype=dt)
    if kind == "moe_router":
        from llm_perf_opt.models.deepseek_ocr.modeling import moe_router_program

        t, h, e, top_k = dims
        return moe_router_program(tokens=t, hidden=h, experts=e, top_k=top_k, device=device, dtype=dt)
    b, m, n, k = dims
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
#: than the host needs to issue GEMM_CALLS GEMMs; doubled until the host is ahead (a routed-experts call
#: issues some 40 kernels)
SPIN_CYCLES = 2_000_000
#: times the spin (or the ``keep_busy`` work) is doubled before the timer gives up
MAX_SPIN_DOUBLINGS = 8


def queued_cuda_timer(fn: Callable[[], Any], calls: int, *, keep_busy: Callable[[], Any] | None = None) -> float:
    """Device seconds per call of ``calls`` calls of ``fn`` issued while the device spins (a sleep kernel,
    which draws little power and leaves the clocks as they were; ``keep_busy`` queues other work instead),
    timed by CUDA events around the calls alone. An event after the spin tells whether the device was
    still spinning when the host had issued every call; if not, the spin is doubled and the calls run
    again, so the events see the device's time, not the host's. UserError when the host cannot get ahead."""
    import torch

    for doubling in range(MAX_SPIN_DOUBLINGS + 1):
        torch.cuda.synchronize()
        if keep_busy is None:
            torch.cuda._sleep(SPIN_CYCLES * 2 ** doubling)
        else:
            for _ in range(2 ** doubling):
                keep_busy()
        spun = torch.cuda.Event()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        spun.record()
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        host_ahead = not spun.query()
        torch.cuda.synchronize()
        if host_ahead:
            return float(start.elapsed_time(end)) * 1e-3 / calls
    raise UserError(f"GEMM timing: the host did not get ahead of the device in {calls} calls, even behind "
                    f"{2 ** MAX_SPIN_DOUBLINGS} times the queued work; the time would be the host's")


def measure_gemms(keys: Iterable[str], *, device: str, repeats: int, calls: int | None = None,
                  timer: QueuedTimer = queued_cuda_timer, progress: Callable[[str], None] | None = None
                  ) -> dict[str, list[float]]:
    """Key -> device seconds per call of each repeat (after one warm-up repeat), for every distinct key;
    ``calls`` per repeat (default GEMM_CALLS, CALL_KIND_CALLS for a call kind)."""
    if repeats < 1 or (calls is not None and calls < 1):
        raise UserError(f"GEMM timing: repeats and calls must be >= 1, got {repeats} and {calls}")
    out: dict[str, list[float]] = {}
    for key in sorted(set(keys)):
        n = calls or (CALL_KIND_CALLS if split_gemm_key(key)[0] in CALL_KINDS else GEMM_CALLS)
        fn = gemm_program(key, device)
        timer(fn, n)  # warm-up: kernel selection, workspace
        out[key] = [timer(fn, n) for _ in range(repeats)]
        if progress:
            s = statistics.median(out[key])
            rate = f", {gemm_flops(key) / s / 1e12:.1f} TFLOP/s" if gemm_flops(key) else ""
            progress(f"gemm {key}: {s * 1e6:.2f} us per call{rate}")
        del fn
    return out
