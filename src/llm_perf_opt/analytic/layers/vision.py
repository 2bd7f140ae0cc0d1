"""Vision layers of DeepSeek-OCR: SAM ViT-B (windowed + global attention, neck,
compressor convs), CLIP-L fed by SAM features, projector, image-token layout.

Notation: N views in one call (batch x tiles), S view side in pixels,
g = S / patch patch-grid side, C width, h heads, d = C / h head dim,
w window side, b / w_b bytes per activation / weight element.
FLOPs = 2 x MACs (see :mod:`llm_perf_opt.analytic.base`).
"""

from __future__ import annotations

import math

from llm_perf_opt.analytic.base import (
    PROJECTOR_GROUP_HOST_OPS,
    PROJECTOR_RANGE_HOST_OPS,
    PROJECTOR_VIEW_CALL_WEIGHT,
    BaseLayer,
    CompositeLayer,
    OpGroup,
)
from llm_perf_opt.analytic.layers.common import (
    GELU_FLOPS_PER_ELEM,
    QUICK_GELU_FLOPS_PER_ELEM,
    SOFTMAX_FLOPS_PER_ELEM,
    AttentionCore,
    Conv2d,
    Elementwise,
    LayerNorm,
    Linear,
)
from llm_perf_opt.hardware.gemms import gemm_key
from llm_perf_opt.hardware.patterns import pattern_key
from llm_perf_opt.models.deepseek_ocr.config import ClipConfig, ProjectorConfig, SamConfig
from llm_perf_opt.vocab import OperatorCategory, Stage

#: bicubic interpolation reads a 4x4 neighbourhood: 16 multiply-adds per output element
BICUBIC_FLOPS_PER_ELEM = 2 * 16


class SamPatchEmbed(CompositeLayer):
    """Conv(3 -> C, kernel = stride = patch, bias) over N views of side S: a g x g patch grid."""

    summary = "SAM patch embedding: non-overlapping patch convolution"
    formulas = ("conv tensor-core FLOPs = 2 * N * g^2 * C * 3 * p^2", "weights = C*3*p^2 + C")

    def __init__(self, name: str, stage: Stage, cfg: SamConfig, *, views: int, side_px: int, act_bytes: int,
                 weight_bytes: int) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        p, c = cfg.patch_size, cfg.width
        self.grid = side_px // p
        # encode_sam copies the pixels from pageable host memory to the device (.to): one sync per call
        # (measured: reports/profile/h200-timeline/find-syncs.txt, the copy under aten::to in vision.sam)
        self.host_syncs = 1
        # the copy itself is a launch (Memcpy HtoD, kernel census reports/profile/h200-census/) moving the
        # fp32 pixels from pageable host memory, at the h2d_pageable rate hw bench measures
        upload = self.add(OpGroup("pixel_upload", stage, weight_dtype_bytes=weight_bytes,
                                  summary="the page's fp32 pixels copied from pageable host memory"))
        upload.cuda_op(OperatorCategory.MEMORY, 1, io_bytes=4 * views * 3 * side_px * side_px,
                       pattern=pattern_key("h2d_pageable", side_px // p))
        # cuDNN runs this conv far below the tensor-core rate (a generic implicit GEMM, kernel census): its
        # bytes move at the patch_conv rate hw bench measures
        self.add(Conv2d("projection", stage, batch=views, height=side_px, width=side_px, c_in=3, c_out=c, kernel=p,
                        stride=p, padding=0, bias=True, act_bytes=act_bytes, weight_bytes=weight_bytes,
                        pattern=pattern_key("patch_conv", side_px // p)))


class SamAttention(CompositeLayer):
    """SAM attention with decomposed relative position, windowed (padded to w x w windows) or global.

    Windowed: the g x g map is padded to G = ceil(g/w)*w and cut into
    n_w = N*(G/w)^2 windows of w^2 tokens. Global: n_w = N windows of g^2 tokens.
    The eager path is counted kernel by kernel as transformers runs it (checked
    against the dispatched aten calls in tests/unit/test_analytic_dispatch.py).
    """

    summary = "SAM multi-head attention with decomposed relative position (windowed or global)"
    formulas = (
        "tokens incl. padding T_p = n_w * s^2 (s = w windowed, g global); G = n_w * h groups; E = G * s^4 scores",
        "qkv:  2 * T_p * C * 3C;  proj: 2 * T_p * C * C",
        "qkv split (n_w > 1: windowed calls, or a global call over several views): the permuted qkv is copied:"
        " io = 2 * b * 3 * T_p * C",
        "rel-pos: two table resizes and gathers, copies of q (2 * b * T_p * C each; 1 after a qkv split, 2 without),"
        " two einsums bhwc,hkc->bhwk"
        " (2 * 2 * G * s^3 * d FLOPs), the broadcast rel_h + rel_w written (b * E) and copied (2 * b * E)",
        "eager, in dispatch order: q * scale and QK^T (2 * G * s^4 * d) first, then the rel-pos lookups, then"
        " + bias (read 2 b E, write b E), cast to fp32 (read b E, write 4 E), softmax in fp32 (read 4 E,"
        " write 4 E), cast back (read 4 E, write b E), PV",
        "  -> 36 bytes per score in bf16; kernels per call: 20 (rel-pos 9 or 10, core 7, copies, linears)"
        " + 4 on CUDA (the two index copies to the device, two zero-fills of the table resizes)",
        "output merge: the permuted output is copied: io = 2 * b * T_p * C",
        "weights = 3C^2 + 3C + C^2 + C + 2 * (2s'-1) * d   (s' = w windowed, img/p global)",
    )

    def __init__(self, name: str, stage: Stage, cfg: SamConfig, *, views: int, grid: int, window: int,
                 fused: bool, act_bytes: int, weight_bytes: int) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        c, h = cfg.width, cfg.heads
        d = c // h
        b = act_bytes
        if window > 0:
            padded = math.ceil(grid / window) * window
            n_w = views * (padded // window) ** 2
            side = window
            table = window
        else:
            n_w, side, table = views, grid, cfg.img_size // cfg.patch_size
        self.windows, self.side = n_w, side
        tokens = n_w * side * side
        groups = n_w * h
        scores = groups * side ** 4
        tc = tokens * c
        self.add(Linear("qkv", stage, tokens=tokens, in_features=c, out_features=3 * c, bias=True,
                        act_bytes=act_bytes, weight_bytes=weight_bytes))
        # the permuted qkv cannot be viewed as (3, views * heads, tokens, d) when there are several windows
        # (windowed calls, or a global call over several views): one copy, after which one einsum copies the
        # query map; a global call over one view needs no copy and copies the query map once per einsum
        # instead (as dispatched on CPU: aten clones of DeepseekOcr2SamVisionAttention at 1 and 2 views)
        split_qkv = n_w > 1
        q_copies = 1 if split_qkv else 2
        if split_qkv:
            split = self.add(OpGroup("qkv_split", stage, weight_dtype_bytes=weight_bytes,
                                     summary="qkv reshaped to (3, heads, tokens, d): one copy"))
            split.op(OperatorCategory.MEMORY, io_bytes=2 * b * 3 * tc, launches=1,
                     pattern=pattern_key("head_split", side))
        self.params = 2 * (2 * table - 1) * d  # rel_pos_h, rel_pos_w
        # eager order as dispatched: q * scale and QK^T, then the rel-pos lookups (which wait for them),
        # then bias, softmax and PV
        if not fused:
            qk = self.add(OpGroup("scores", stage, weight_dtype_bytes=weight_bytes,
                                  summary="q * scale and the QK^T scores"))
            qk.op(OperatorCategory.ATTENTION, cc_flops=tc, io_bytes=2 * b * tc, launches=1)  # q * scale
            qk.op(OperatorCategory.ATTENTION, tc_flops=2 * scores * d, io_bytes=2 * b * tc + b * scores,
                  launches=1, gemm=gemm_key("bmm_nt", groups, side * side, side * side, d))  # reads q, k, writes E
            qk.activation_bytes = b * scores
        rel = self.add(OpGroup("rel_pos", stage, weight_dtype_bytes=weight_bytes,
                               summary="decomposed relative position: gathers, two einsums and the broadcast bias"))
        rel_table = 2 * side * side * d * b  # the two gathered (s, s, d) tables
        # resize (2, a no-op copy when the table already fits) + gather (2) of the tables
        rel.op(OperatorCategory.MEMORY, io_bytes=2 * rel_table, launches=4)
        # the query map copied (q_copies: a permutation of heads like the qkv split), the two einsums as bmm (2)
        rel.op(OperatorCategory.ATTENTION, tc_flops=2 * 2 * groups * side ** 3 * d,
               io_bytes=2 * (b * tc + rel_table // 2 + b * groups * side ** 3), launches=2)
        rel.op(OperatorCategory.ATTENTION, io_bytes=q_copies * 2 * b * tc, launches=q_copies,
               pattern=pattern_key("head_split", side))
        # rel_h + rel_w broadcast to (s^2 x s^2) per group (written in the einsums' permuted layout), then
        # made contiguous (a copy): the access patterns hw bench measures (llm_perf_opt.hardware.patterns)
        rel.op(OperatorCategory.ATTENTION, cc_flops=scores, io_bytes=2 * b * groups * side ** 3 + b * scores,
               launches=1, pattern=pattern_key("outer_add", side))
        rel.op(OperatorCategory.ATTENTION, io_bytes=2 * b * scores, launches=1,
               pattern=pattern_key("permuted_copy", side))
        rel.activation_bytes = b * scores
        # transformers' get_rel_pos indexes the table with coordinates built by torch.arange on the host:
        # each of the two lookups (h, w) copies its index to the device and synchronises
        # (measured: 24 per 12-block SAM pass, reports/profile/h200-timeline/find-syncs.txt); building the
        # coordinates takes 7 host-side ops per lookup (arange x2, mul x2, sub, add, cast) and no kernel
        rel.host_syncs = 2
        rel.host_ops = 14
        # on CUDA each lookup's index copy is a launch (Memcpy HtoD) and upsample_linear1d zero-fills its
        # output first (aten::fill_ under aten::zero_): 4 launches the meta dispatch does not show
        # (kernel census, reports/profile/h200-census/census-h200.json)
        rel.cuda_op(OperatorCategory.MEMORY, 4, io_bytes=2 * 2 * (2 * table - 1) * d * b)
        core = self.add(OpGroup("core", stage, weight_dtype_bytes=weight_bytes,
                                summary="eager attention: + bias, fp32 softmax, cast, PV"))
        core.op(OperatorCategory.ATTENTION, cc_flops=(SOFTMAX_FLOPS_PER_ELEM + 1) * scores, launches=4)
        core.op(OperatorCategory.ATTENTION, tc_flops=2 * scores * d,
                io_bytes=b * scores + 2 * b * tc,       # PV: read probs and v, write out
                launches=1, gemm=gemm_key("bmm_nn", groups, side * side, d, side * side))
        # + bias (read both, write), cast up, softmax in fp32, cast down: each in its measured access pattern
        for pattern, nbytes in (("bias_add", 3 * b * scores), ("cast_up", (b + 4) * scores),
                                ("softmax_fp32", 8 * scores), ("cast_down", (4 + b) * scores)):
            core.op(OperatorCategory.ATTENTION, io_bytes=nbytes, pattern=pattern_key(pattern, side))
        # live at the softmax: the biased scores (b), their fp32 copy (4: torch's softmax with dtype= casts
        # bf16 first) and the fp32 probabilities (4); the PV output comes after the fp32 pair is freed.
        # Measured: the peak allocated memory of every H200 run follows b + 8 (+ the held bias) per score
        # (docs/results-h200.md section 20)
        core.activation_bytes = max(scores * (b + 8), b * scores + b * tc)
        if fused:  # SDPA keeps scores and probabilities on chip: one kernel reads q, k, v and the bias
            core.ops.clear()
            core.pattern_io.clear()
            core.gemm_ops.clear()
            core.gemm_calls.clear()
            core.op(OperatorCategory.ATTENTION, tc_flops=2 * 2 * scores * d,
                    cc_flops=tc + (SOFTMAX_FLOPS_PER_ELEM + 1) * scores,
                    io_bytes=4 * b * tc + b * scores, launches=1)
            core.activation_bytes = b * tc
        merge = self.add(OpGroup("out_merge", stage, weight_dtype_bytes=weight_bytes,
                                 summary="attention output permuted back to (tokens, C): one copy"))
        # the inverse permutation of the qkv split, taken at its measured rate
        merge.op(OperatorCategory.MEMORY, io_bytes=2 * b * tc, launches=1, pattern=pattern_key("head_split", side))
        self.add(Linear("proj", stage, tokens=tokens, in_features=c, out_features=c, bias=True,
                        act_bytes=act_bytes, weight_bytes=weight_bytes))
        # held through the core: the bias, and the token tensors the eager forward keeps referenced: its
        # input (the block's LayerNorm output or window partition), the qkv output (3C per token: `qkv` stays a
        # view of it) and, when split, its (3, heads, tokens, d) copy that q, k and v view. With them and the
        # pixels (SamEncoder) the footprint is 0-0.7% under every peak of reports/hardware/h200/memory-batches*.json
        # (scripts/gpu/memory_batches.py --from; docs/results-h200.md section 27)
        self.held_bytes = b * scores + b * tc * (1 + 3 + (3 if split_qkv else 0))


class SamMLP(CompositeLayer):
    """lin1 (C -> m, bias) -> GELU -> lin2 (m -> C, bias)."""

    summary = "SAM MLP: two dense layers with GELU"
    formulas = ("2 * T * C * m + 2 * T * m * C tensor-core FLOPs",
                f"GELU: {GELU_FLOPS_PER_ELEM} * T * m CUDA-core FLOPs", "weights = 2*C*m + m + C")

    def __init__(self, name: str, stage: Stage, *, tokens: int, dim: int, hidden: int, act_bytes: int,
                 weight_bytes: int, act_flops: float = GELU_FLOPS_PER_ELEM, in_name: str = "lin1",
                 out_name: str = "lin2", quick_gelu: bool = False) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        self.add(Linear(in_name, stage, tokens=tokens, in_features=dim, out_features=hidden, bias=True,
                        act_bytes=act_bytes, weight_bytes=weight_bytes))
        # GELU: one kernel (read, write); quick_gelu x * sigmoid(1.702 x) runs eagerly as three:
        # 1.702 * x (read, write), sigmoid (read, write), x * s (read 2, write): 7 tensor passes
        self.add(Elementwise("act", stage, elements=tokens * hidden, flops_per_elem=act_flops,
                             inputs=6 if quick_gelu else 1, launches=3 if quick_gelu else 1,
                             act_bytes=act_bytes, weight_bytes=weight_bytes))
        self.add(Linear(out_name, stage, tokens=tokens, in_features=hidden, out_features=dim, bias=True,
                        act_bytes=act_bytes, weight_bytes=weight_bytes))


class SamBlock(CompositeLayer):
    """Pre-norm block: x + attn(norm1(x)) (window partition/unpartition around it), x + mlp(norm2(x))."""

    summary = "SAM ViT block (windowed or global attention)"
    formulas = (
        "norm1, attention, residual add, norm2, MLP, residual add",
        "window partition + unpartition (windowed blocks): pad, partition, unpartition and crop copies,"
        " io = b * C * (3 T + 5 T_p); on CUDA the pad is a fill and a copy (+1 launch, + b * T * C)",
        "on CUDA each LayerNorm copies its non-contiguous input first: +1 launch, + 2 * b * T * C each",
        "the residual stream is a (N, g, g, C) view of channel-major memory (the patch conv's layout): the"
        " LayerNorm copies and residual adds move their bytes in the transposed_copy / transposed_add patterns",
    )

    def __init__(self, name: str, stage: Stage, cfg: SamConfig, *, views: int, grid: int, window: int,
                 fused: bool, act_bytes: int, weight_bytes: int) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        c = cfg.width
        tokens = views * grid * grid
        self.window = window
        # residual stream: a (views, g, g, C) view of the patch conv's channel-major output (the adds keep
        # that layout, so every LayerNorm copies it and every residual add is strided)
        stream_add = pattern_key("transposed_add", grid)
        ln1 = self.add(LayerNorm("layer_norm1", stage, tokens=tokens, dim=c, act_bytes=act_bytes,
                                 weight_bytes=weight_bytes))
        attn = SamAttention("attn", stage, cfg, views=views, grid=grid, window=window, fused=fused,
                            act_bytes=act_bytes, weight_bytes=weight_bytes)
        if window > 0:
            padded_tokens = attn.windows * attn.side ** 2
            part = self.add(OpGroup("window_partition", stage, weight_dtype_bytes=weight_bytes,
                                    summary="pad to whole windows, partition and unpartition (copies)"))
            # pad (read T, write T_p), partition copy (T_p -> T_p), unpartition copy (T_p -> T_p),
            # crop copy (T -> T)
            part.op(OperatorCategory.MEMORY, io_bytes=act_bytes * (3 * tokens + 5 * padded_tokens) * c, launches=4)
            # CUDA pads as fill (whole padded map, counted above) + copy of the input into it: one more
            # launch, the input written once more (kernel census)
            part.cuda_op(OperatorCategory.MEMORY, 1, io_bytes=act_bytes * tokens * c)
            part.activation_bytes = act_bytes * padded_tokens * c
        self.add(attn)
        self.add(Elementwise("residual1", stage, elements=tokens * c, flops_per_elem=1, inputs=2,
                             act_bytes=act_bytes, weight_bytes=weight_bytes, pattern=stream_add))
        ln2 = self.add(LayerNorm("layer_norm2", stage, tokens=tokens, dim=c, act_bytes=act_bytes,
                                 weight_bytes=weight_bytes))
        # the CUDA layer_norm kernel wants a contiguous input: SAM's (sliced, permuted) hidden states are
        # copied first (aten::clone under native_layer_norm, 25 of 26 SAM LayerNorms in the kernel census)
        for ln in (ln1, ln2):
            ln.cuda_op(OperatorCategory.MEMORY, 1, io_bytes=2 * act_bytes * tokens * c,
                       pattern=pattern_key("transposed_copy", grid))
        self.add(SamMLP("mlp", stage, tokens=tokens, dim=c, hidden=cfg.mlp_dim, act_bytes=act_bytes,
                        weight_bytes=weight_bytes))
        self.add(Elementwise("residual2", stage, elements=tokens * c, flops_per_elem=1, inputs=2,
                             act_bytes=act_bytes, weight_bytes=weight_bytes, pattern=stream_add))
        self.held_bytes = act_bytes * tokens * c


class LayerNorm2d(LayerNorm):
    """LayerNorm over channels of an N x C x H x W map (channels-first); permutes around it."""

    summary = "LayerNorm over the channel dimension of a feature map"


class SamNeck(CompositeLayer):
    """Conv1x1 C -> c_o (no bias), LayerNorm2d, Conv3x3 c_o -> c_o (pad 1, no bias), LayerNorm2d."""

    summary = "SAM neck: 1x1 and 3x3 convs with channel LayerNorms"
    formulas = ("conv1: 2 * N * g^2 * c_o * C;  conv2: 2 * N * g^2 * c_o * c_o * 9",
                "two LayerNorm2d: 2 * 8 * N * g^2 * c_o CUDA-core FLOPs",
                "weights = C*c_o + 9*c_o^2 + 4*c_o")

    def __init__(self, name: str, stage: Stage, cfg: SamConfig, *, views: int, grid: int, act_bytes: int,
                 weight_bytes: int) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        co = cfg.out_chans
        self.add(Conv2d("conv1", stage, batch=views, height=grid, width=grid, c_in=cfg.width, c_out=co, kernel=1,
                        stride=1, padding=0, bias=False, act_bytes=act_bytes, weight_bytes=weight_bytes))
        self.add(LayerNorm2d("layer_norm1", stage, tokens=views * grid * grid, dim=co, act_bytes=act_bytes,
                             weight_bytes=weight_bytes, launches=3))
        self.add(Conv2d("conv2", stage, batch=views, height=grid, width=grid, c_in=co, c_out=co, kernel=3, stride=1,
                        padding=1, bias=False, act_bytes=act_bytes, weight_bytes=weight_bytes))
        self.add(LayerNorm2d("layer_norm2", stage, tokens=views * grid * grid, dim=co, act_bytes=act_bytes,
                             weight_bytes=weight_bytes, launches=3))
        # cuDNN copies the permuted input of conv1 and the compressor convs' inputs to contiguous (3 clones)
        # and adds conv biases in place: 5 launches of which the LayerNorm2d launches above hold 4
        self.cuda_op(OperatorCategory.MEMORY, 1)


class SamCompressor(CompositeLayer):
    """The two stride-2 Conv3x3 (no bias, no activation) after the neck: c_o -> c_2 -> c_3, 16x fewer tokens."""

    summary = "SAM compressor: net_2 and net_3 (checkpoint names), two stride-2 3x3 convs"
    formulas = ("conv1 (net_2): 2 * N * (g/2)^2 * c_2 * c_o * 9", "conv2 (net_3): 2 * N * (g/4)^2 * c_3 * c_2 * 9",
                "weights = 9 * (c_o*c_2 + c_2*c_3)")


class SamEncoder(CompositeLayer):
    """SAM ViT-B over N square views of side S: patch embed, blocks, neck, net_2, net_3.

    Output: N x c_3 x (g/4) x (g/4) (two stride-2 convs), c_3 = downsample_channels[-1].
    """

    summary = "SAM ViT-B encoder with neck and the two stride-2 compressor convs"
    formulas = ("absolute position embedding add: N * g^2 * C CUDA-core FLOPs; bicubic resize of the"
                " (img/p)^2 table when g != img/p: 32 * g^2 * C",
                "proj.conv1 (net_2): Conv3x3 s2 c_o -> c_2: 2 * N * (g/2)^2 * c_2 * c_o * 9",
                "proj.conv2 (net_3): Conv3x3 s2 c_2 -> c_3: 2 * N * (g/4)^2 * c_3 * c_2 * 9",
                "weights: pos_embed (img/p)^2 * C + the children's")

    def __init__(self, name: str, stage: Stage, cfg: SamConfig, *, views: int, side_px: int, fused: bool,
                 act_bytes: int, weight_bytes: int) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        pe = SamPatchEmbed("patch_embed", stage, cfg, views=views, side_px=side_px, act_bytes=act_bytes,
                           weight_bytes=weight_bytes)
        self.add(pe)
        g = pe.grid
        c = cfg.width
        pos_grid = cfg.img_size // cfg.patch_size
        self.params = pos_grid * pos_grid * c  # pos_embed
        elems = views * g * g * c
        pos = self.add(OpGroup("pos_embed", stage, weight_dtype_bytes=weight_bytes,
                               summary="absolute position embedding: resize (when needed) and add"))
        pos.op(OperatorCategory.ELEMENTWISE, cc_flops=elems, io_bytes=3 * act_bytes * elems, launches=1,
               pattern=pattern_key("transposed_add", g))  # the patch conv's channel-major output + table
        if g != pos_grid:  # bicubic (antialiased) resize of the 64 x 64 table in fp32
            out = g * g * c
            pos.op(OperatorCategory.ELEMENTWISE, cc_flops=BICUBIC_FLOPS_PER_ELEM * out,
                   io_bytes=4 * (pos_grid * pos_grid * c + out), launches=3)
        pos.activation_bytes = act_bytes * elems
        # the call's pixels ([N, 3, S, S] at the workload dtype, as encode_sam moves them) stay referenced
        # through the whole encoder
        self.held_bytes = act_bytes * views * 3 * side_px * side_px
        built: dict[int, SamBlock] = {}  # window -> the first block of it; the others are the same work
        for i in range(cfg.depth):
            window = 0 if i in cfg.global_attn_indexes else cfg.window_size
            first = built.get(window)
            if first is None:
                first = built[window] = SamBlock(f"layers.{i}", stage, cfg, views=views, grid=g, window=window,
                                                 fused=fused, act_bytes=act_bytes, weight_bytes=weight_bytes)
                self.add(first)
            else:
                self.add(first.renamed(f"layers.{i}"))
        self.add(SamNeck("neck", stage, cfg, views=views, grid=g, act_bytes=act_bytes, weight_bytes=weight_bytes))
        c2, c3 = cfg.downsample_channels
        proj = self.add(SamCompressor("proj", stage, weight_dtype_bytes=weight_bytes))
        n2 = Conv2d("conv1", stage, batch=views, height=g, width=g, c_in=cfg.out_chans, c_out=c2, kernel=3, stride=2,
                    padding=1, bias=False, act_bytes=act_bytes, weight_bytes=weight_bytes)
        proj.add(n2)
        n3 = Conv2d("conv2", stage, batch=views, height=n2.h_out, width=n2.w_out, c_in=c2, c_out=c3, kernel=3,
                    stride=2, padding=1, bias=False, act_bytes=act_bytes, weight_bytes=weight_bytes)
        proj.add(n3)
        self.out_side = n3.h_out
        self.out_channels = c3


class ClipEmbeddings(CompositeLayer):
    """CLIP embeddings from SAM features: flatten N x c_3 x q x q to q^2 patch embeddings, prepend CLS,
    add the 257-entry position table bicubic-resized to q x q (+ CLS). The patch conv is NOT run but its
    weight is a parameter (it is in the checkpoint)."""

    summary = "CLIP embeddings built from the SAM feature map (patch conv unused)"
    formulas = ("CUDA-core FLOPs = N * (q^2+1) * C (position add) + 32 * q^2 * C when q != 16 (resize)",
                "io bytes = b * N * (q^2+1) * C * 3 (flatten/cat copy, add)",
                "weights = C (class) + C*3*p^2 (unused patch conv) + 257*C (positions)")

    def __init__(self, name: str, stage: Stage, cfg: ClipConfig, *, views: int, grid: int, act_bytes: int,
                 weight_bytes: int) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        c = cfg.width
        self.params = c + c * 3 * cfg.patch_size ** 2 + cfg.num_positions * c
        tokens = views * (grid * grid + 1)
        pos_side = cfg.image_size // cfg.patch_size
        # the CLS + patches concat (and, when resized, the CLS + position table concat)
        self.op(OperatorCategory.MEMORY, io_bytes=2 * act_bytes * tokens * c, launches=1 if grid == pos_side else 2)
        self.op(OperatorCategory.ELEMENTWISE, cc_flops=tokens * c, io_bytes=3 * act_bytes * tokens * c, launches=1)
        if grid != pos_side:
            out = grid * grid * c
            self.op(OperatorCategory.ELEMENTWISE, cc_flops=BICUBIC_FLOPS_PER_ELEM * out,
                    io_bytes=4 * (pos_side * pos_side * c + out), launches=3)
        self.activation_bytes = act_bytes * tokens * c


class ClipAttention(CompositeLayer):
    """CLIP self-attention: q/k/v projections (C -> C, bias each; the checkpoint's fused qkv_proj split at
    load), h heads, no mask, out_proj (C -> C, bias)."""

    summary = "CLIP multi-head self-attention (no mask)"
    formulas = ("q/k/v_proj: 3 * 2 * T * C * C;  out_proj: 2 * T * C * C",
                "QK^T and PV: 2 * 2 * (N*h) * (q^2+1)^2 * d",
                "eager: scores scaled, cast to fp32, softmax, cast back: 6b + 16 bytes per score, 6 kernels;"
                " the output is copied back to (tokens, C); with N > 1 views q, k, v are copied to (N*h, T, d)"
                " first (3 * 2 * b * T * C, 3 kernels)",
                "weights = 4C^2 + 4C")

    def __init__(self, name: str, stage: Stage, cfg: ClipConfig, *, views: int, seq: int, fused: bool,
                 act_bytes: int, weight_bytes: int) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        c, h = cfg.width, cfg.heads
        tokens = views * seq
        for proj in ("q_proj", "k_proj", "v_proj"):
            self.add(Linear(proj, stage, tokens=tokens, in_features=c, out_features=c, bias=True,
                            act_bytes=act_bytes, weight_bytes=weight_bytes))
        if views > 1 and not fused:
            # (N, h, T, d) from a transposed view merges N and h for the batched products only by a copy
            # when N > 1 (at N = 1 it is a view): q, k and v are each copied once
            heads = self.add(OpGroup("qkv_heads", stage, weight_dtype_bytes=weight_bytes,
                                     summary="q, k, v copied to (N*h, T, d) for the batched products (N > 1)"))
            # the copies are made inside reshape (no Python-level op of their own): cheap on the host; the
            # census's CLIP host time did not grow with them (11.9 ms at batch 4, on a host that took 0.65x the
            # batch-1 pass's time per decode kernel, against 18.4 ms at batch 1)
            heads.inner_op(OperatorCategory.MEMORY, 3, io_bytes=3 * 2 * act_bytes * tokens * c)
        # eager chain per score: QK^T writes (b), * scale (b + b), cast to fp32 (b + 4), softmax fp32 (4 + 4),
        # cast back (4 + b), PV reads (b): 6b + 16 bytes in 6 kernels
        self.add(AttentionCore("core", stage, groups=views * h, q_len=seq, k_len=seq, head_dim=c // h, fused=fused,
                               causal_skip=False, act_bytes=act_bytes, weight_bytes=weight_bytes,
                               score_bytes=act_bytes, prob_bytes=4, has_bias=False, eager_launches=6,
                               eager_bytes_per_score=6 * act_bytes + 16))
        if not fused:
            merge = self.add(OpGroup("out_merge", stage, weight_dtype_bytes=weight_bytes,
                                     summary="attention output transposed back to (tokens, C): one copy"))
            merge.op(OperatorCategory.MEMORY, io_bytes=2 * act_bytes * tokens * c, launches=1)
        self.add(Linear("out_proj", stage, tokens=tokens, in_features=c, out_features=c, bias=True,
                        act_bytes=act_bytes, weight_bytes=weight_bytes))


class ClipBlock(CompositeLayer):
    """x + attn(layer_norm1(x)); x + mlp(layer_norm2(x)), MLP fc1 -> quick_gelu -> fc2."""

    summary = "CLIP encoder layer (pre-norm, quick_gelu MLP)"
    formulas = ("MLP: 2 * T * C * m * 2 tensor-core FLOPs; quick_gelu 5 * T * m CUDA-core FLOPs",)

    def __init__(self, name: str, stage: Stage, cfg: ClipConfig, *, views: int, seq: int, fused: bool,
                 act_bytes: int, weight_bytes: int, count: int = 1) -> None:
        from llm_perf_opt.data.common import Repetition

        super().__init__(name, stage, weight_dtype_bytes=weight_bytes, count=count, repetition=Repetition.FOR)
        c = cfg.width
        tokens = views * seq
        self.add(LayerNorm("layer_norm1", stage, tokens=tokens, dim=c, act_bytes=act_bytes, weight_bytes=weight_bytes))
        self.add(ClipAttention("self_attn", stage, cfg, views=views, seq=seq, fused=fused, act_bytes=act_bytes,
                               weight_bytes=weight_bytes))
        self.add(Elementwise("residual1", stage, elements=tokens * c, flops_per_elem=1, inputs=2,
                             act_bytes=act_bytes, weight_bytes=weight_bytes))
        self.add(LayerNorm("layer_norm2", stage, tokens=tokens, dim=c, act_bytes=act_bytes, weight_bytes=weight_bytes))
        self.add(SamMLP("mlp", stage, tokens=tokens, dim=c, hidden=cfg.mlp_dim, act_bytes=act_bytes,
                        weight_bytes=weight_bytes, act_flops=QUICK_GELU_FLOPS_PER_ELEM, quick_gelu=True, in_name="fc1",
                        out_name="fc2"))
        self.add(Elementwise("residual2", stage, elements=tokens * c, flops_per_elem=1, inputs=2,
                             act_bytes=act_bytes, weight_bytes=weight_bytes))
        self.held_bytes = act_bytes * tokens * c


class ClipEncoder(CompositeLayer):
    """CLIP-L over N views with a q x q SAM grid: embeddings, pre_layrnorm, L identical layers (FOR)."""

    summary = "CLIP-L transformer fed by SAM features"
    formulas = ("sequence = q^2 + 1 (CLS); layers repeat L times (repetition FOR)",)

    def __init__(self, name: str, stage: Stage, cfg: ClipConfig, *, views: int, grid: int, fused: bool,
                 act_bytes: int, weight_bytes: int) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        seq = grid * grid + 1
        self.add(ClipEmbeddings("embeddings", stage, cfg, views=views, grid=grid, act_bytes=act_bytes,
                                weight_bytes=weight_bytes))
        self.add(LayerNorm("pre_layrnorm", stage, tokens=views * seq, dim=cfg.width, act_bytes=act_bytes,
                           weight_bytes=weight_bytes))
        self.add(ClipBlock("transformer.layers", stage, cfg, views=views, seq=seq, fused=fused, act_bytes=act_bytes,
                           weight_bytes=weight_bytes, count=cfg.layers))


class FeatureFusion(BaseLayer):
    """Concatenate CLIP output (CLS dropped, C_clip) with flattened SAM output (c_3) -> 2048 channels."""

    summary = "fusion: cat(CLIP[:,1:], flatten(SAM)) along channels"
    formulas = ("io bytes = 2 * b * T * (C_clip + c_3) (read both, write the concatenation)",
                "host ops = G + (2 + pages) * w: the group's module calls (G = PROJECTOR_GROUP_HOST_OPS); "
                "flatten, transpose and a slice per page launch nothing (w = PROJECTOR_VIEW_CALL_WEIGHT)")

    def __init__(self, name: str, stage: Stage, *, tokens: int, dim: int, act_bytes: int, weight_bytes: int,
                 images: int = 1) -> None:
        """images: pages whose views this call fuses (each gets its slice of the projected tokens)."""
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        self.op(OperatorCategory.MEMORY, io_bytes=2 * act_bytes * tokens * dim, launches=1)
        self.activation_bytes = act_bytes * tokens * dim
        # the group's fusion and linear module calls, then SAM's map flattened and transposed (2 views) and one
        # slice of the projection per page: aten calls without a kernel (counted:
        # tests/unit/test_analytic_dispatch.py)
        self.host_ops = PROJECTOR_GROUP_HOST_OPS + (2 + images) * PROJECTOR_VIEW_CALL_WEIGHT


class Projector(CompositeLayer):
    """Linear(2048 -> 1280, bias) over the fused vision tokens."""

    summary = "projector: Linear(input_dim -> n_embed) with bias"
    formulas = ("tensor-core FLOPs = 2 * T * input_dim * n_embed", "weights = input_dim * n_embed + n_embed")

    def __init__(self, name: str, stage: Stage, cfg: ProjectorConfig, *, tokens: int, act_bytes: int,
                 weight_bytes: int) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        self.add(Linear("layers", stage, tokens=tokens, in_features=cfg.input_dim, out_features=cfg.n_embed,
                        bias=True, act_bytes=act_bytes, weight_bytes=weight_bytes))


class ImageTokenLayout(BaseLayer):
    """Arrange projected tokens: tile grid (q_t*rows) x (q_t*cols) and global q_g x q_g, a learned
    image_newline after every grid row, a learned view_seperator after the views."""

    summary = "newline / separator layout of the image tokens"
    formulas = ("slots = (q_t*rows) * (q_t*cols + 1) + q_g * (q_g + 1) + 1",
                "per image: each grid concatenated with its newlines, then the views and the separator:"
                " io bytes = 4 * b * slots * H; tiled pages also copy the permuted tile grid first"
                " (2 * b * T_local * H): 2 kernels per page, 4 when tiled",
                "weights = 2 * H (newline, separator)",
                "host ops = R + pages * (7 * grids + 2) * w: the range's fixed host work (R = "
                "PROJECTOR_RANGE_HOST_OPS), then the reshapes, permutes, casts and expands that launch nothing "
                "(w = PROJECTOR_VIEW_CALL_WEIGHT)")

    def __init__(self, name: str, stage: Stage, *, slots: int, hidden: int, act_bytes: int, weight_bytes: int,
                 images: int = 1, local_tokens: int = 0) -> None:
        """slots: all images' slots; images: pages in the batch; local_tokens: tile-grid tokens of all pages."""
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        self.params = 2 * hidden
        per_image = 4 if local_tokens else 2
        self.op(OperatorCategory.MEMORY, io_bytes=act_bytes * hidden * (4 * slots + 2 * local_tokens),
                launches=per_image * images)
        self.activation_bytes = act_bytes * slots * hidden
        # per grid: 4 reshapes, the permute, the newline's no-op cast and its expand; per page: the separator's
        # cast and reshape. Aten calls without a kernel of their own; the tiled grid's copy is launched inside
        # one of those reshapes
        grids = 2 if local_tokens else 1
        self.inner_launches = float(images) if local_tokens else 0.0
        self.host_ops = PROJECTOR_RANGE_HOST_OPS + images * (7 * grids + 2) * PROJECTOR_VIEW_CALL_WEIGHT
