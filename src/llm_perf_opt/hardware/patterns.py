"""Access-pattern bandwidths: how fast the eager score-tensor kernels of decomposed-rel-pos attention run.

The copy ceiling of :mod:`llm_perf_opt.hardware.bench` is a contiguous, vectorised
copy. The eager attention of SAM-style ViTs (decomposed relative position, as in
transformers' SAM and DeepSeek-OCR's encoder) moves most of its bytes in kernels
that are not: a broadcast outer sum written in a permuted layout, the copy that
makes it contiguous, casts to and from fp32 and an fp32 softmax over rows of
s^2 scores. Their achieved bandwidth depends on the pattern and on the token
grid side s, so the bench runs the same torch calls on an s x s grid and reports
each pattern's bandwidth (bytes read + written per second) per side.

For ``n`` groups (batch x windows x heads) of an s x s token grid with head dim
d and E = n * s^4 scores (``b`` bytes per bf16 element)::

    outer_add       rel_h[..., :, None] + rel_w[..., None, :]   reads 2 * n * s^3 * b, writes E * b
                    (rel_h, rel_w: the einsums bhwc,hkc->bhwk of the query with the gathered tables;
                    the sum inherits their permuted layout)
    permuted_copy   the sum reshaped to (n, s^2, s^2): a copy,        2 * E * b
    bias_add        scores + bias (contiguous),                       3 * E * b
    cast_up         bf16 -> fp32,                                     E * (b + 4)
    softmax_fp32    softmax over rows of s^2 in fp32,                 8 * E
    cast_down       fp32 -> bf16,                                     E * (4 + b)

and for the residual stream, which SAM keeps in the patch-embedding conv's channel-major
memory order behind a (n, s, s, C) view (A = n * s^2 * C elements, one page: n = 1)::

    transposed_copy  the view made contiguous (the copy before each LayerNorm),   2 * A * b
    transposed_add   view + contiguous tensor, written in the view's layout (residual adds), 3 * A * b
    head_split       the (m, s^2, 3, h, d) qkv permuted to (3, m h, s^2, d) by reshape: a copy whose
                     contiguous runs are d elements (m = ceil(4 * 4096 / s^2) windows: four pages),
                     2 * Q * b
                     (Q = m * s^2 * 3 C)

and for the upload of one page (the input of the patch embedding, patch 16)::

    h2d_pageable     a (1, 3, 16 s, 16 s) fp32 image in pageable host memory moved to the device as bf16
                     (``.to(device, dtype)``, the encoder's first call),    3 * (16 s)^2 * 4 (host bytes)
    patch_conv       the bf16 patch embedding conv (3 -> C, kernel = stride = 16, bias) on that page,
                     as cuDNN runs it by default; bytes as the analytic Conv2d counts them:
                     b * (3 * (16 s)^2 + s^2 C) + b * (C * 3 * 16^2 + C)

Pattern keys are ``"<pattern>@<side>"``; :func:`pattern_ratio` looks one up in a
table of ratios to the copy bandwidth, taking the nearest measured side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from llm_perf_opt.errors import UserError

#: Patterns measured by :func:`measure_patterns`, in the order the eager attention runs them.
SCORE_PATTERNS: tuple[str, ...] = ("outer_add", "permuted_copy", "bias_add", "cast_up", "softmax_fp32", "cast_down")
#: Residual-stream patterns (module doc), measured on one page's (1, s, s, C) activation.
ACTIVATION_PATTERNS: tuple[str, ...] = ("transposed_copy", "transposed_add", "head_split")
#: Host-to-device patterns, measured on one page's pixels.
UPLOAD_PATTERNS: tuple[str, ...] = ("h2d_pageable", "patch_conv")
#: Patch side of the upload pattern's image (16 s x 16 s pixels for token-grid side s; SAM ViT-B).
UPLOAD_PATCH = 16
PATTERNS: tuple[str, ...] = SCORE_PATTERNS + ACTIVATION_PATTERNS + UPLOAD_PATTERNS
#: Token-grid sides measured by default: SAM's 14 x 14 window and the global grids of the
#: 512/640/1024/1280-px modes (patch 16).
DEFAULT_PATTERN_SIDES: tuple[int, ...] = (14, 32, 40, 64, 80)
#: Scores per measured tensor (2^27: 256 MiB in bf16, several times any GPU's L2).
DEFAULT_PATTERN_SCORES = 2 ** 27
#: Head dim of the query the rel-pos einsums read (SAM ViT-B: 768 / 12).
DEFAULT_HEAD_DIM = 64
#: Channels of the residual-stream patterns (SAM ViT-B width).
DEFAULT_CHANNELS = 768
#: Bytes per element of the half-precision tensors measured (bf16).
HALF_BYTES = 2


def pattern_key(pattern: str, side: int) -> str:
    """``"<pattern>@<side>"``; UserError for an unknown pattern or a side < 1."""
    if pattern not in PATTERNS:
        raise UserError(f"unknown access pattern {pattern!r}; known: {', '.join(PATTERNS)}")
    if side < 1:
        raise UserError(f"access pattern {pattern}: token-grid side must be >= 1, got {side}")
    return f"{pattern}@{side}"


def split_key(key: str) -> tuple[str, int]:
    """(pattern, side) of a key made by :func:`pattern_key`; UserError if malformed."""
    name, sep, side = key.partition("@")
    if not sep or name not in PATTERNS or not side.isdigit() or int(side) < 1:
        raise UserError(f"malformed access-pattern key {key!r}: expected <pattern>@<side> with pattern one of "
                        f"{', '.join(PATTERNS)}")
    return name, int(side)


def pattern_bytes(pattern: str, groups: int, side: int, elem_bytes: int = HALF_BYTES,
                  channels: int = DEFAULT_CHANNELS) -> int:
    """Bytes read + written by one call of ``pattern`` on ``groups`` s x s grids (module doc); the
    residual-stream patterns move ``groups`` x s x s x ``channels`` activations."""
    scores = groups * side ** 4
    b = elem_bytes
    acts = groups * side * side * channels
    return {
        "h2d_pageable": groups * 3 * (UPLOAD_PATCH * side) ** 2 * 4,
        "patch_conv": b * groups * (3 * (UPLOAD_PATCH * side) ** 2 + side * side * channels)
        + b * (channels * 3 * UPLOAD_PATCH ** 2 + channels),
        "transposed_copy": 2 * acts * b,
        "transposed_add": 3 * acts * b,
        "head_split": 2 * head_windows(side) * groups * side * side * 3 * channels * b,
        "outer_add": 2 * groups * side ** 3 * b + scores * b,
        "permuted_copy": 2 * scores * b,
        "bias_add": 3 * scores * b,
        "cast_up": scores * (b + 4),
        "softmax_fp32": 8 * scores,
        "cast_down": scores * (4 + b),
    }[pattern]


def head_windows(side: int) -> int:
    """Windows of side ``side`` the head_split pattern copies at once: about four pages of 4096 tokens
    (75 MB of bf16 qkv, beyond the L2 that would otherwise hold a repeated copy's input)."""
    return max(1, math.ceil(4 * 4096 / side ** 2))


def pattern_groups(side: int, scores: int = DEFAULT_PATTERN_SCORES) -> int:
    """Groups measured at ``side``: enough s x s grids for about ``scores`` scores, at least two (with one
    group the permuted sum can be viewed without the copy the attention makes)."""
    return max(2, round(scores / side ** 4))


def pattern_ratio(ratios: Mapping[str, float], key: str) -> float:
    """Bandwidth of ``key``'s pattern relative to the copy bandwidth, from ``ratios`` (key -> ratio):
    the exact side if measured, else the measured side nearest in log scale (ties: the smaller side);
    1.0 when the pattern was not measured at all."""
    name, side = split_key(key)
    if key in ratios:
        return ratios[key]
    sides = [s for n, s in (split_key(k) for k in ratios) if n == name]
    if not sides:
        return 1.0
    nearest = min(sides, key=lambda s: (abs(math.log(s / side)), s))
    return ratios[f"{name}@{nearest}"]


def _programs(groups: int, side: int, head_dim: int, device: str,
              channels: int = DEFAULT_CHANNELS) -> dict[str, Callable[[], Any]]:
    """One callable per pattern on inputs laid out as the eager attention lays them out."""
    import torch

    gen = torch.Generator(device=device).manual_seed(0)
    half = torch.bfloat16
    query = torch.randn(groups, side * side, head_dim, device=device, dtype=half, generator=gen)
    table_h = torch.randn(side, side, head_dim, device=device, dtype=half, generator=gen)
    table_w = torch.randn(side, side, head_dim, device=device, dtype=half, generator=gen)
    grid = query.reshape(groups, side, side, head_dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", grid, table_h)
    rel_w = torch.einsum("bhwc,wkc->bhwk", grid, table_w)
    summed = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    flat = (groups, side * side, side * side)
    scores = torch.randn(*flat, device=device, dtype=half, generator=gen)
    bias = summed.reshape(flat)
    up = scores.to(torch.float32)
    probs = torch.softmax(up, dim=-1)
    channel_major = torch.randn(1, channels, side, side, device=device, dtype=half, generator=gen)
    stream = channel_major.permute(0, 2, 3, 1)  # (1, s, s, C) view of channel-major memory
    branch = torch.randn(1, side, side, channels, device=device, dtype=half, generator=gen)
    m, heads = head_windows(side), channels // head_dim
    qkv = torch.randn(m, side * side, 3 * channels, device=device, dtype=half, generator=gen)
    pixels = torch.randn(1, 3, UPLOAD_PATCH * side, UPLOAD_PATCH * side, generator=torch.Generator().manual_seed(0))
    page = pixels.to(device=device, dtype=half)
    conv_w = torch.randn(channels, 3, UPLOAD_PATCH, UPLOAD_PATCH, device=device, dtype=half, generator=gen)
    conv_b = torch.randn(channels, device=device, dtype=half, generator=gen)
    del query, table_h, table_w, grid
    return {
        "h2d_pageable": lambda: pixels.to(device=device, dtype=half),
        "patch_conv": lambda: torch.nn.functional.conv2d(page, conv_w, conv_b, stride=UPLOAD_PATCH),
        "transposed_copy": lambda: stream.contiguous(),
        "transposed_add": lambda: stream + branch,
        "head_split": lambda: qkv.reshape(m, side * side, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        .reshape(3, m * heads, side * side, head_dim),
        "outer_add": lambda: rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :],
        "permuted_copy": lambda: summed.reshape(flat),
        "bias_add": lambda: scores + bias,
        "cast_up": lambda: scores.to(torch.float32),
        "softmax_fp32": lambda: torch.softmax(up, dim=-1),
        "cast_down": lambda: probs.to(half),
    }


def measure_patterns(sides: Sequence[int], *, device: str, timer: Callable[..., list[float]], warmup: int,
                     repeats: int, inner: int, scores: int = DEFAULT_PATTERN_SCORES,
                     head_dim: int = DEFAULT_HEAD_DIM, progress: Callable[[str], None] | None = None
                     ) -> tuple[dict[str, float], dict[str, list[float]], dict[str, int]]:
    """Measure every pattern at every side: (key -> bytes/s (median), key -> per-repeat ms per call,
    side -> groups measured). ``timer`` as in :mod:`llm_perf_opt.hardware.bench`."""
    from llm_perf_opt.hardware.bench import rate_from_times

    if not sides:
        raise UserError("access patterns: give at least one token-grid side")
    rates: dict[str, float] = {}
    times: dict[str, list[float]] = {}
    groups_at: dict[str, int] = {}
    for side in sides:
        if side < 1:
            raise UserError(f"access patterns: token-grid side must be >= 1, got {side}")
        groups = pattern_groups(side, scores)
        groups_at[str(side)] = groups
        programs = _programs(groups, side, head_dim, device)
        for name in PATTERNS:
            fn = programs[name]
            n = 1 if name in ACTIVATION_PATTERNS or name in UPLOAD_PATTERNS else groups

            def run(fn: Callable[[], Any] = fn) -> None:
                for _ in range(inner):
                    fn()

            per_op = [t / inner for t in timer(run, warmup=warmup, repeats=repeats)]
            key = pattern_key(name, side)
            rates[key] = rate_from_times(pattern_bytes(name, n, side), per_op)
            times[key] = per_op
            if progress:
                what = (f"{head_windows(side)} x {side}^2 x 3 x {DEFAULT_CHANNELS} qkv" if name == "head_split"
                        else f"1 x {side}^2 x {DEFAULT_CHANNELS} activations" if name in ACTIVATION_PATTERNS
                        else f"a 3 x {UPLOAD_PATCH * side}^2 page" if name in UPLOAD_PATTERNS
                        else f"{groups} x {side}^4 scores")
                progress(f"pattern {key} ({what}): {rates[key] / 1e12:.3f} TB/s")
        del programs
    return rates, times, groups_at
