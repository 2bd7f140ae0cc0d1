"""LLaMA-style primitives of the DeepSeek-OCR text decoder: RMSNorm, RoPE,
multi-head attention (prefill: causal over S tokens; decode: one query against
a KV cache of length L), SwiGLU MLP.

Notation: B sequences, T = B * S_q new tokens, H hidden, h_q / h_kv heads,
d head dim, L keys attended (KV length incl. the new tokens), b bytes per
activation element, FLOPs = 2 x MACs.
"""

from __future__ import annotations

from llm_perf_opt.analytic.base import BaseLayer, CompositeLayer, OpGroup
from llm_perf_opt.analytic.layers.common import (
    SILU_FLOPS_PER_ELEM,
    AttentionCore,
    Elementwise,
    Linear,
    RMSNorm,
)
from llm_perf_opt.hardware.gemms import gemm_key
from llm_perf_opt.vocab import OperatorCategory, Stage

__all__ = ["RMSNorm", "RotaryEmbedding", "ApplyRotary", "LlamaAttention", "SwiGLUMLP"]

#: RoPE application per element of q or k: x*cos + rotate_half(x)*sin = 2 multiplies + 1 add + 1 negate (half)
ROPE_FLOPS_PER_ELEM = 3.5


class RotaryEmbedding(BaseLayer):
    """cos/sin tables for the S positions of a forward: freqs = positions (S) x inv_freq (d/2) per row of
    position ids (an outer product done elementwise in transformers 5.x, so no tensor-core FLOPs), then cos, sin."""

    summary = "rotary embedding tables (cos, sin) for the positions of this forward"
    formulas = ("CUDA-core FLOPs = 2 * R * (d/2) * S (outer product; R rows of position ids) + 2 * R * S * d"
                " (cos, sin)", "no weights (inv_freq is a buffer)")

    def __init__(self, name: str, stage: Stage, *, rows: int, positions: int, head_dim: int, act_bytes: int,
                 weight_bytes: int) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        self.op(OperatorCategory.ELEMENTWISE,
                cc_flops=2 * rows * (head_dim // 2) * positions + 2 * rows * positions * head_dim, io_bytes=4 * rows * positions * head_dim * 3 // 2
                + 2 * act_bytes * rows * positions * head_dim, launches=6)
        self.activation_bytes = 2 * act_bytes * rows * positions * head_dim


class ApplyRotary(BaseLayer):
    """q, k <- q*cos + rotate_half(q)*sin (same for k) on the full head dim."""

    summary = "apply rotary position embedding to q and k"
    formulas = (f"CUDA-core FLOPs = {ROPE_FLOPS_PER_ELEM} * T * (h_q + h_kv) * d",
                "eager per tensor: x * cos, -x2, cat, * sin, add: io bytes = 10 * b * T * (h_q + h_kv) * d"
                " + 4 * b * T * d (cos, sin read by the four multiplies); 10 kernels",
                "with the batch B known: the call is timed whole by the bench (rope@BxTxHqxHkvxD)")

    def __init__(self, name: str, stage: Stage, *, tokens: int, heads_q: int, heads_kv: int, head_dim: int,
                 act_bytes: int, weight_bytes: int, batch: int | None = None) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        elems = tokens * (heads_q + heads_kv) * head_dim
        self.op(OperatorCategory.ELEMENTWISE, cc_flops=ROPE_FLOPS_PER_ELEM * elems,
                io_bytes=10 * act_bytes * elems + 4 * act_bytes * tokens * head_dim, launches=10)
        self.activation_bytes = act_bytes * elems
        if batch is not None and batch >= 1 and tokens % batch == 0:
            # the whole call, as the bench times it (llm_perf_opt.hardware.gemms): strided views, broadcasts
            self.timed_call(OperatorCategory.ELEMENTWISE,
                            gemm_key("rope", batch, tokens // batch, heads_q, heads_kv, head_dim))


class LlamaAttention(CompositeLayer):
    """Multi-head attention (q/k/v/o projections without bias, RoPE, KV cache).

    Prefill: S_q = S_k = S, causal. Decode: S_q = 1 per sequence, S_k = L.
    The KV cache after this forward holds L positions: 2 * B * L * h_kv * d * b bytes.
    """

    summary = "decoder self-attention with RoPE and a KV cache (prefill causal, decode against L keys)"
    formulas = (
        "q_proj: 2*T*H*h_q*d; k_proj, v_proj: 2*T*H*h_kv*d each; o_proj: 2*T*h_q*d*H",
        "QK^T and PV: 2 * 2 * (B*h_q) * S_q * L * d (full rectangle as executed by eager/SDPA;"
        " causal flash kernels skip the upper triangle)",
        "KV-cache append (torch.cat of the whole cache, K and V): io = 4 * b * B * L * h_kv * d",
        "eager core per score: QK^T writes (b), * scale (2b), + mask (2b), cast to fp32 (b + 4), softmax"
        " (8), cast back (4 + b), PV reads (b): 8b + 16 bytes, + the mask (b * B * S_q * L); 7 kernels;"
        " prefill copies the output back to (tokens, h_q * d)",
        "KV-cache bytes = 2 * B * L * h_kv * d * b",
        "weights = H*h_q*d + 2*H*h_kv*d + h_q*d*H",
    )

    def __init__(self, name: str, stage: Stage, *, batch: int, q_len: int, kv_len: float, hidden: int, heads_q: int,
                 heads_kv: int, head_dim: int, fused: bool, causal_skip: bool, act_bytes: int,
                 weight_bytes: int) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        tokens = batch * q_len
        for proj, heads in (("q_proj", heads_q), ("k_proj", heads_kv), ("v_proj", heads_kv)):
            self.add(Linear(proj, stage, tokens=tokens, in_features=hidden, out_features=heads * head_dim,
                            bias=False, act_bytes=act_bytes, weight_bytes=weight_bytes))
        self.add(ApplyRotary("rotary", stage, tokens=tokens, heads_q=heads_q, heads_kv=heads_kv, head_dim=head_dim,
                             act_bytes=act_bytes, weight_bytes=weight_bytes, batch=batch))
        # cache append (torch.cat / index_copy of the new k, v); the cache itself is owned here
        cache = self.add(OpGroup("kv_cache_update", stage, weight_dtype_bytes=weight_bytes,
                                 summary="append the new keys and values to the KV cache"))
        # DynamicCache appends with torch.cat: the old cache is read and the whole cache written, K and V
        cache.op(OperatorCategory.MEMORY, io_bytes=2 * act_bytes * batch * (2 * kv_len) * heads_kv * head_dim,
                 launches=2)
        cache.kvcache_bytes = 2 * batch * kv_len * heads_kv * head_dim * act_bytes
        # the core reads K, V for all h_q heads (h_kv == h_q here; GQA would read each KV head once)
        core = self.add(AttentionCore("core", stage, groups=batch * heads_q, q_len=q_len, k_len=kv_len,
                                      head_dim=head_dim, fused=fused, causal_skip=causal_skip, act_bytes=act_bytes,
                                      weight_bytes=weight_bytes, score_bytes=act_bytes, prob_bytes=4, has_bias=True,
                                      eager_launches=7, eager_bytes_per_score=8 * act_bytes + 16))
        if not fused:
            core.op(OperatorCategory.ATTENTION, io_bytes=act_bytes * batch * q_len * kv_len)  # the additive mask
            if q_len > 1:  # (B, h, S, d) -> (B, S, h*d) is a copy unless S == 1
                merge = self.add(OpGroup("out_merge", stage, weight_dtype_bytes=weight_bytes,
                                         summary="attention output transposed back to (tokens, h_q * d): one copy"))
                merge.op(OperatorCategory.MEMORY, io_bytes=2 * act_bytes * tokens * heads_q * head_dim, launches=1)
        self.add(Linear("o_proj", stage, tokens=tokens, in_features=heads_q * head_dim, out_features=hidden,
                        bias=False, act_bytes=act_bytes, weight_bytes=weight_bytes))


class SwiGLUMLP(CompositeLayer):
    """down(silu(gate(x)) * up(x)) with width I (no biases)."""

    summary = "SwiGLU MLP: down_proj(silu(gate_proj(x)) * up_proj(x))"
    formulas = ("tensor-core FLOPs = 3 * 2 * T * H * I", f"CUDA-core FLOPs = ({SILU_FLOPS_PER_ELEM} + 1) * T * I",
                "weights = 3 * H * I")

    def __init__(self, name: str, stage: Stage, *, tokens: int, hidden: int, intermediate: int, act_bytes: int,
                 weight_bytes: int, category: OperatorCategory = OperatorCategory.GEMM) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        for proj in ("gate_proj", "up_proj"):
            self.add(Linear(proj, stage, tokens=tokens, in_features=hidden, out_features=intermediate, bias=False,
                            act_bytes=act_bytes, weight_bytes=weight_bytes, category=category))
        # silu(gate) (read, write), * up (read 2, write): 5 tensor passes in 2 kernels
        self.add(Elementwise("act_mul", stage, elements=tokens * intermediate, flops_per_elem=SILU_FLOPS_PER_ELEM + 1,
                             inputs=4, act_bytes=act_bytes, weight_bytes=weight_bytes, launches=2))
        self.add(Linear("down_proj", stage, tokens=tokens, in_features=intermediate, out_features=hidden, bias=False,
                        act_bytes=act_bytes, weight_bytes=weight_bytes, category=category))
