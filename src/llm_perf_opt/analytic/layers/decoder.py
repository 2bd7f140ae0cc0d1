"""DeepSeek-3B-MoE decoder layers: embedding, dense MLP, MoE (router, routed
experts, shared experts), decoder layer, final norm, LM head.

Notation: T new tokens in this forward, H hidden, I_e expert width, E routed
experts, k experts per token, V vocabulary, b / w bytes per activation /
weight element, FLOPs = 2 x MACs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llm_perf_opt.analytic.base import BaseLayer, CompositeLayer
from llm_perf_opt.analytic.layers.common import (
    SILU_FLOPS_PER_ELEM,
    SOFTMAX_FLOPS_PER_ELEM,
    Elementwise,
    Linear,
)
from llm_perf_opt.analytic.layers.llama import LlamaAttention, RMSNorm, SwiGLUMLP
from llm_perf_opt.hardware.gemms import gemm_key
from llm_perf_opt.models.deepseek_ocr.config import LanguageConfig
from llm_perf_opt.vocab import EXPERTS_IMPLEMENTATIONS, OperatorCategory, Stage

#: launches per routed expert actually hit in transformers' eager loop (counted from its aten calls): expert mask
#: eq + nonzero (a host sync), 2 index gathers, gate_up and down GEMMs, silu, mul, routing-weight mul, index_add
LAUNCHES_PER_HIT_EXPERT = 10
#: launches of the eager loop whatever the routing: output zeros, the one-hot expert mask (aminmax, zeros,
#: scatter), its sum, gt and nonzero over the experts (on CUDA one_hot with a class count may skip aminmax)
LAUNCHES_EAGER_BASE = 7
#: launches of transformers' grouped_mm experts forward whatever the routing (counted from its aten calls:
#: sort, floor_divide, 3 index gathers, int cast, histc, cumsum, 2 grouped GEMMs, silu, mul, weight mul,
#: arange + index_put for the inverse permutation, sum)
LAUNCHES_GROUPED_MM = 16
#: launches the profiled CUDA stack (torch 2.11, transformers 5.17, H200 kernel census in
#: reports/profile/h200-census/) adds to each grouped_mm experts call besides the sort: _grouped_mm runs 2
#: kernels (x2 calls), cumsum 2, histc zero-fills its bins, and transformers 5.17 masks sentinel rows
#: unconditionally (ge, clamp_, masked_fill_ and two out-of-place masked_fill of clone + fill: 7)
LAUNCHES_GROUPED_MM_CUDA = 2 + 1 + 1 + 7
#: CUDA sorts up to this many keys in place (1 kernel + 3 copies + an index arange: 4 more launches than the
#: one aten call); more keys go to cub's radix sort (10 memsets, histogram, exclusive sum, 8 one-sweep passes
#: of the int64 keys, reverse indices, 1 copy: 21 more), as counted in the census's prefills (11 MoE layers)
SORT_SMALL_MAX_KEYS = 4096
SORT_SMALL_EXTRA = 4
SORT_RADIX_EXTRA = 21
#: launches of transformers' batched_mm experts forward: repeat_interleave, 2 weight gathers, 2 bmm, silu, mul,
#: weight mul, view-sum. All three counts are checked exactly by tests/unit/test_analytic_launches.py.
LAUNCHES_BATCHED_MM = 9
#: host-device syncs of the prefill's prompt set-up besides one per row: the pageable uploads of the prompt
#: ids and of the attention mask (generation.prefill; CUDA sync debug mode on the H200,
#: reports/profile/h200-timeline/prefill-timeline-base.txt)
MERGE_SYNCS = 2
#: host-device syncs of each decoder forward's attention mask (same traces): with eager attention transformers'
#: eager mask builds its fill value with torch.tensor(0.0, device=...), a pageable upload
#: (masking_utils.eager_mask); with SDPA it reads whether the padding mask is all ones to skip the mask
#: (masking_utils._ignore_causal_mask_sdpa, a device-to-host read); reports/profile/h200-timeline/
#: prefill-timeline-base-sdpa.txt
MASK_SYNCS = 1


def expected_distinct_experts(experts: int, top_k: int, tokens: int) -> float:
    """Expected distinct routed experts touched by T tokens with uniform routing: E * (1 - (1 - k/E)^T)."""
    if tokens <= 0:
        return 0.0
    return experts * (1.0 - (1.0 - top_k / experts) ** tokens)


class Embedding(BaseLayer):
    """Token embedding gather: T rows of H from a V x H table."""

    summary = "token embedding lookup"
    formulas = ("no FLOPs", "io bytes = 2 * b * T * H + 8 * T (ids)", "weights = V * H")

    def __init__(self, name: str, stage: Stage, *, tokens: int, vocab: int, hidden: int, act_bytes: int,
                 weight_bytes: int) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        self.params = vocab * hidden
        self.op(OperatorCategory.EMBEDDING, io_bytes=2 * act_bytes * tokens * hidden + 8 * tokens, launches=1)
        self.activation_bytes = act_bytes * tokens * hidden


class ImageTokenMerge(BaseLayer):
    """Scatter the B * slots image embeddings into the `<image>` positions of the text embeddings.

    Host syncs: 2 + B pageable host-to-device copies, each of which waits for the device (the prompt ids
    and the attention mask, then each row's slot indices; measured with CUDA sync debug mode,
    reports/profile/h200-timeline/prefill-timeline-base.txt). They make the prefill start only once the
    vision stages' device work has drained.
    """

    summary = "merge image embeddings into the prompt embeddings (masked scatter)"
    formulas = ("io bytes = 2 * b * B * slots * H + T (mask)", "host syncs = 2 + B")

    def __init__(self, name: str, stage: Stage, *, image_tokens: int, tokens: int, hidden: int, act_bytes: int,
                 weight_bytes: int, rows: int = 1) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        self.op(OperatorCategory.MEMORY, io_bytes=2 * act_bytes * image_tokens * hidden + tokens, launches=3)
        self.host_syncs = MERGE_SYNCS + rows


class MoERouter(CompositeLayer):
    """gate: Linear(H -> E, no bias) in fp32, softmax over E, greedy top-k (no renormalisation in v1)."""

    summary = "MoE router: fp32 logits, softmax, top-k"
    formulas = ("tensor-core FLOPs = 2 * T * H * E", f"softmax: {SOFTMAX_FLOPS_PER_ELEM} * T * E CUDA-core FLOPs",
                "top-k: ~E * T comparisons (counted as CUDA-core FLOPs)", "weights = E * H",
                "whole token count: the call is timed whole by the bench (moe_router@TxHxExK)")

    def __init__(self, name: str, stage: Stage, *, tokens: int, hidden: int, experts: int, top_k: int,
                 act_bytes: int, weight_bytes: int) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        # the gate runs in fp32: the hidden states and the weight are cast (read b, write 4 bytes);
        # the router module IS the gate Linear (its weight is `mlp.gate.weight`), folded into this node
        lin = Linear("gate", stage, tokens=tokens, in_features=hidden, out_features=experts, bias=False,
                     act_bytes=4, weight_bytes=weight_bytes, category=OperatorCategory.MOE_ROUTER)
        self.ops = lin.ops
        self.params = lin.params
        self.op(OperatorCategory.MOE_ROUTER,
                cc_flops=(SOFTMAX_FLOPS_PER_ELEM + 1) * tokens * experts,
                io_bytes=(act_bytes + 4) * tokens * hidden + (weight_bytes + 4) * experts * hidden
                + 3 * 4 * tokens * experts + 12 * tokens * top_k,
                launches=5)  # casts of x and W, softmax, top-k, routing-weight scale (+ the gate mm above)
        if tokens >= 1 and int(tokens) == tokens:
            # the whole router, as the bench times it (llm_perf_opt.hardware.gemms): its GEMM is fp32, which
            # the roofline would charge at the bf16 matmul rate
            self.timed_call(OperatorCategory.MOE_ROUTER, gemm_key("moe_router", int(tokens), hidden, experts, top_k))
        self.activation_bytes = 4 * tokens * experts


class RoutedExperts(BaseLayer):
    """E SwiGLU experts of width I_e; each token runs its k experts.

    FLOPs do not depend on the routing (each token hits k distinct experts);
    weight bytes read do: only the experts hit load their weights. With routing
    counts (tokens per expert) the hit count is exact, else the expectation
    under uniform routing E*(1-(1-k/E)^T).
    """

    summary = "routed experts: each token runs top-k SwiGLU experts"
    formulas = (
        "tensor-core FLOPs = T * k * 3 * 2 * H * I_e",
        f"CUDA-core FLOPs = T * k * (({SILU_FLOPS_PER_ELEM} + 1) * I_e + 2 * H)  (act*up, weight and sum)",
        "experts hit n = E * (1 - (1 - k/E)^T) (uniform routing) or counted from routing",
        "eager (per-expert loop): io bytes = w * n * 3 * H * I_e + b * T * k * (2H + 3 I_e) + b * T * H;"
        f" launches = {LAUNCHES_PER_HIT_EXPERT} * n + {LAUNCHES_EAGER_BASE}",
        "grouped_mm: eager io bytes + 4 * b * T * k * H (sorted gather, weighting, inverse gather, sum);"
        f" launches = {LAUNCHES_GROUPED_MM} (+1 cast below fp32) + {LAUNCHES_GROUPED_MM_CUDA} on CUDA"
        f" + sort: {SORT_SMALL_EXTRA} (T * k <= {SORT_SMALL_MAX_KEYS}) or {SORT_RADIX_EXTRA}",
        "grouped_mm, whole token count, no routing counts: the call is timed whole by the bench"
        " (experts_grouped_mm@ExKxTxHxI, random routing)",
        "batched_mm: weights gathered per pair: w * 3 * T * k * 3 * H * I_e (read, copy, read) + eager activations;"
        f" launches = {LAUNCHES_BATCHED_MM}",
        "weights (resident) = E * 3 * H * I_e",
    )

    def __init__(self, name: str, stage: Stage, *, tokens: int, hidden: int, intermediate: int, experts: int,
                 top_k: int, act_bytes: int, weight_bytes: int,
                 tokens_per_expert: Sequence[int] | None = None, implementation: str = "grouped_mm") -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        if implementation not in EXPERTS_IMPLEMENTATIONS:
            raise ValueError(f"{name}: experts implementation {implementation!r} not in {EXPERTS_IMPLEMENTATIONS}")
        self.implementation = implementation
        self.params = experts * 3 * hidden * intermediate
        if tokens_per_expert is not None:
            if len(tokens_per_expert) != experts:
                raise ValueError(f"{name}: routing counts for {len(tokens_per_expert)} experts, expected {experts}")
            pairs = int(sum(tokens_per_expert))
            hit = float(sum(1 for n in tokens_per_expert if n > 0))
        else:
            pairs = tokens * top_k
            hit = expected_distinct_experts(experts, top_k, tokens)
        self.experts_hit = hit
        self.token_expert_pairs = pairs
        act_io = act_bytes * pairs * (2 * hidden + 3 * intermediate) + act_bytes * tokens * hidden
        weight_io = weight_bytes * hit * 3 * hidden * intermediate
        launches = LAUNCHES_PER_HIT_EXPERT * hit + LAUNCHES_EAGER_BASE
        cuda = 0.0
        cuda_io = 0.0
        if implementation == "grouped_mm":
            act_io += act_bytes * pairs * 4 * hidden
            # + the cast of the fp32 routing weights to the activation dtype (none in fp32)
            launches = LAUNCHES_GROUPED_MM + (1 if act_bytes != 4 else 0)
            cuda = LAUNCHES_GROUPED_MM_CUDA + (SORT_RADIX_EXTRA if pairs > SORT_SMALL_MAX_KEYS else SORT_SMALL_EXTRA)
            # sentinel masks: masked_fill_ on the gathered rows (read, write), clone + fill of the up and
            # down outputs (read, write, write)
            cuda_io = act_bytes * pairs * (2 * hidden + 3 * (2 * intermediate + hidden))
        elif implementation == "batched_mm":
            weight_io = weight_bytes * 3 * pairs * 3 * hidden * intermediate
            launches = LAUNCHES_BATCHED_MM
        self.op(OperatorCategory.MOE_EXPERTS,
                tc_flops=pairs * 3 * 2 * hidden * intermediate,
                cc_flops=pairs * ((SILU_FLOPS_PER_ELEM + 1) * intermediate + 2 * hidden),
                io_bytes=weight_io + act_io, launches=launches)
        if cuda:
            self.cuda_op(OperatorCategory.MOE_EXPERTS, cuda, io_bytes=cuda_io)
        if implementation == "grouped_mm" and tokens >= 1 and int(tokens) == tokens and tokens_per_expert is None:
            # the whole call, as the bench times it (llm_perf_opt.hardware.gemms): most of its kernels are
            # not GEMMs (sort, gathers, sentinel masks, weighting, un-permute, sum); the bench routes at random,
            # so measured routing counts keep the roofline
            self.timed_call(OperatorCategory.MOE_EXPERTS,
                            gemm_key("experts_grouped_mm", experts, top_k, int(tokens), hidden, intermediate))
        self.activation_bytes = act_bytes * (tokens * hidden + pairs * 2 * intermediate)


class MoE(CompositeLayer):
    """DeepSeek MoE MLP: router, routed experts, shared experts (fused width n_s * I_e), output sum."""

    summary = "mixture-of-experts MLP (router + routed experts + shared experts)"
    formulas = ("shared experts: SwiGLU of width n_shared * I_e on every token",
                "output = routed_scaling * sum_k(weight_k * expert_k(x)) + shared(x): T * H adds")

    def __init__(self, name: str, stage: Stage, cfg: LanguageConfig, *, tokens: int, act_bytes: int,
                 weight_bytes: int, tokens_per_expert: Sequence[int] | None = None,
                 experts_implementation: str = "grouped_mm") -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        h = cfg.hidden_size
        self.add(MoERouter("gate", stage, tokens=tokens, hidden=h, experts=cfg.n_routed_experts,
                           top_k=cfg.num_experts_per_tok, act_bytes=act_bytes, weight_bytes=weight_bytes))
        self.add(RoutedExperts("experts", stage, tokens=tokens, hidden=h, intermediate=cfg.moe_intermediate_size,
                               experts=cfg.n_routed_experts, top_k=cfg.num_experts_per_tok, act_bytes=act_bytes,
                               weight_bytes=weight_bytes, tokens_per_expert=tokens_per_expert,
                               implementation=experts_implementation))
        self.add(SwiGLUMLP("shared_experts", stage, tokens=tokens, hidden=h,
                           intermediate=cfg.n_shared_experts * cfg.moe_intermediate_size, act_bytes=act_bytes,
                           weight_bytes=weight_bytes, category=OperatorCategory.MOE_EXPERTS))
        self.add(Elementwise("combine", stage, elements=tokens * h, flops_per_elem=1, inputs=2, act_bytes=act_bytes,
                             weight_bytes=weight_bytes, category=OperatorCategory.MOE_EXPERTS))
        self.held_bytes = act_bytes * tokens * h


class DecoderLayer(CompositeLayer):
    """x + self_attn(input_layernorm(x)); x + mlp(post_attention_layernorm(x)); mlp dense or MoE."""

    summary = "decoder layer: RMSNorm, attention, residual, RMSNorm, dense or MoE MLP, residual"
    formulas = ("sum of its children; residual adds T * H each",)

    def __init__(self, name: str, stage: Stage, cfg: LanguageConfig, *, index: int, batch: int, q_len: int,
                 kv_len: float, fused: bool, causal_skip: bool, act_bytes: int, weight_bytes: int,
                 tokens_per_expert: Sequence[int] | None = None, experts_implementation: str = "grouped_mm",
                 shared: dict[str, BaseLayer] | None = None, attention: BaseLayer | None = None) -> None:
        """``shared``: the children that do not depend on ``kv_len`` (all but ``self_attn``) by name, taken from
        it when there and put in it when built, so that decode steps of one layer at other KV lengths, and
        layers of equal routing, hold the same (unchanging) nodes; every other argument must be the same for all
        of them. ``attention``: a ``self_attn`` node of these shapes to hold instead of building one (layers of
        one forward share it: their attention is the same work)."""
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        h = cfg.hidden_size
        tokens = batch * q_len
        self.index = index
        self.is_moe = cfg.is_moe_layer(index)

        def part(key: str, build: Callable[[], BaseLayer]) -> BaseLayer:
            if shared is None:
                return build()
            got = shared.get(key)
            if got is None:
                got = shared[key] = build()
            return got

        self.add(part("input_layernorm", lambda: RMSNorm("input_layernorm", stage, tokens=tokens, dim=h,
                                                         act_bytes=act_bytes, weight_bytes=weight_bytes)))
        self.self_attn = self.add(attention if attention is not None else LlamaAttention(
            "self_attn", stage, batch=batch, q_len=q_len, kv_len=kv_len, hidden=h, heads_q=cfg.num_attention_heads,
            heads_kv=cfg.num_key_value_heads, head_dim=cfg.head_dim, fused=fused, causal_skip=causal_skip,
            act_bytes=act_bytes, weight_bytes=weight_bytes))
        self.add(part("residual1", lambda: Elementwise("residual1", stage, elements=tokens * h, flops_per_elem=1,
                                                       inputs=2, act_bytes=act_bytes, weight_bytes=weight_bytes)))
        self.add(part("post_attention_layernorm",
                      lambda: RMSNorm("post_attention_layernorm", stage, tokens=tokens, dim=h, act_bytes=act_bytes,
                                      weight_bytes=weight_bytes)))
        if self.is_moe:
            self.add(part("mlp", lambda: MoE("mlp", stage, cfg, tokens=tokens, act_bytes=act_bytes,
                                             weight_bytes=weight_bytes, tokens_per_expert=tokens_per_expert,
                                             experts_implementation=experts_implementation)))
        else:
            self.add(part("mlp", lambda: SwiGLUMLP("mlp", stage, tokens=tokens, hidden=h,
                                                   intermediate=cfg.intermediate_size, act_bytes=act_bytes,
                                                   weight_bytes=weight_bytes)))
        self.add(part("residual2", lambda: Elementwise("residual2", stage, elements=tokens * h, flops_per_elem=1,
                                                       inputs=2, act_bytes=act_bytes, weight_bytes=weight_bytes)))
        self.held_bytes = act_bytes * tokens * h


class FinalNorm(RMSNorm):
    """RMSNorm after the last decoder layer."""

    summary = "final RMSNorm"


class LMHead(CompositeLayer):
    """Linear(H -> V, no bias, untied) over the positions whose logits are computed."""

    summary = "LM head: logits over the vocabulary"
    formulas = ("tensor-core FLOPs = 2 * T_logits * H * V", "weights = V * H",
                "T_logits = B in decode; B (last position) or B * S (all positions) in prefill")

    def __init__(self, name: str, stage: Stage, *, tokens: int, hidden: int, vocab: int, act_bytes: int,
                 weight_bytes: int) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        lin = Linear("proj", stage, tokens=tokens, in_features=hidden, out_features=vocab, bias=False,
                     act_bytes=act_bytes, weight_bytes=weight_bytes, category=OperatorCategory.LM_HEAD)
        # the head IS the Linear: fold it into this node so the module path stays `lm_head` (with its GEMM tag:
        # the bench times the head's bf16 shape; the fp32 router gate keeps the roofline, untagged)
        self.ops = lin.ops
        self.gemm_ops, self.gemm_calls = lin.gemm_ops, lin.gemm_calls
        self.params = lin.params
        self.activation_bytes = lin.activation_bytes
