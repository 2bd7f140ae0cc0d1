"""Primitive layers shared by the vision and language parts.

Notation in every formula: T tokens (rows of a matrix product), b bytes per
activation element, w bytes per weight element, FLOPs = 2 x MACs.
"""

from __future__ import annotations

from llm_perf_opt.analytic.base import BaseLayer
from llm_perf_opt.hardware.gemms import gemm_key
from llm_perf_opt.vocab import OperatorCategory, Stage

#: CUDA-core FLOPs per element, by operation (an accounting convention, stated once):
#: LayerNorm: mean 1 + centre 1 + square 1 + variance sum 1 + normalise 2 + affine 2 = 8
LAYERNORM_FLOPS_PER_ELEM = 8
#: RMSNorm: square 1 + sum 1 + scale 1 + weight 1 = 4
RMSNORM_FLOPS_PER_ELEM = 4
#: softmax: max 1 + subtract 1 + exp 1 + sum 1 + divide 1 = 5
SOFTMAX_FLOPS_PER_ELEM = 5
#: GELU (erf form): ~8 (polynomial erf + 3 multiplies/adds)
GELU_FLOPS_PER_ELEM = 8
#: quick_gelu x * sigmoid(1.702 x): multiply 1 + sigmoid 3 + multiply 1 = 5
QUICK_GELU_FLOPS_PER_ELEM = 5
#: SiLU x * sigmoid(x): 4
SILU_FLOPS_PER_ELEM = 4


class Linear(BaseLayer):
    """y = x W^T + b over T tokens: in_features -> out_features."""

    summary = "dense projection y = x W^T (+ bias)"
    formulas = (
        "tensor-core FLOPs = 2 * T * in * out",
        "CUDA-core FLOPs = T * out (bias add, when bias)",
        "io bytes = b * (T*in + T*out) + w * (in*out + out*bias)",
        "weights = in*out + out*bias elements",
    )

    def __init__(self, name: str, stage: Stage, *, tokens: int, in_features: int, out_features: int, bias: bool,
                 act_bytes: int, weight_bytes: int, category: OperatorCategory = OperatorCategory.GEMM,
                 compute_tokens: int | None = None) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        self.tokens, self.in_features, self.out_features, self.bias = tokens, in_features, out_features, bias
        t = tokens if compute_tokens is None else compute_tokens
        self.params = in_features * out_features + (out_features if bias else 0)
        # one addmm (bias) or mm: a GEMM of measurable shape when the token count is whole
        gemm = (gemm_key("linear_bias" if bias else "linear", 1, int(t), out_features, in_features)
                if t >= 1 and float(t).is_integer() else None)
        self.op(category,
                tc_flops=2 * t * in_features * out_features,
                cc_flops=t * out_features if bias else 0,
                io_bytes=act_bytes * t * (in_features + out_features) + weight_bytes * self.params,
                launches=1 if t else 0, gemm=gemm)
        self.activation_bytes = act_bytes * t * out_features


class Conv2d(BaseLayer):
    """2-D convolution over a batch of N maps H x W (square kernel k, stride s, padding p)."""

    summary = "2-D convolution"
    formulas = (
        "H_out = floor((H + 2p - k) / s) + 1 (same for W)",
        "tensor-core FLOPs = 2 * N * H_out * W_out * c_out * c_in * k^2",
        "io bytes = b * N * (c_in*H*W + c_out*H_out*W_out) + w * c_out*c_in*k^2",
        "weights = c_out*c_in*k^2 (+ c_out bias)",
    )

    def __init__(self, name: str, stage: Stage, *, batch: int, height: int, width: int, c_in: int, c_out: int,
                 kernel: int, stride: int, padding: int, bias: bool, act_bytes: int, weight_bytes: int,
                 pattern: str | None = None) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        self.h_out = (height + 2 * padding - kernel) // stride + 1
        self.w_out = (width + 2 * padding - kernel) // stride + 1
        self.c_out = c_out
        out_elems = batch * self.h_out * self.w_out * c_out
        self.params = c_out * c_in * kernel * kernel + (c_out if bias else 0)
        self.op(OperatorCategory.CONV,
                tc_flops=2 * out_elems * c_in * kernel * kernel,
                cc_flops=out_elems if bias else 0,
                io_bytes=act_bytes * (batch * c_in * height * width + out_elems) + weight_bytes * self.params,
                launches=1, pattern=pattern)
        self.activation_bytes = act_bytes * out_elems


class LayerNorm(BaseLayer):
    """LayerNorm over the last dim C of T rows (weight and bias); also LayerNorm2d over channels."""

    summary = "layer normalisation (per-row mean/variance, affine)"
    formulas = (f"CUDA-core FLOPs = {LAYERNORM_FLOPS_PER_ELEM} * T * C",
                "io bytes = 2 * b * T * C + 2 * w * C", "weights = 2 * C")

    def __init__(self, name: str, stage: Stage, *, tokens: int, dim: int, act_bytes: int, weight_bytes: int,
                 launches: int = 1) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        self.params = 2 * dim
        self.op(OperatorCategory.NORM, cc_flops=LAYERNORM_FLOPS_PER_ELEM * tokens * dim,
                io_bytes=2 * act_bytes * tokens * dim + weight_bytes * self.params, launches=launches)
        self.activation_bytes = act_bytes * tokens * dim


class RMSNorm(BaseLayer):
    """RMSNorm over the last dim C of T rows (weight only)."""

    summary = "RMS normalisation x / rms(x) * g"
    formulas = (f"CUDA-core FLOPs = {RMSNORM_FLOPS_PER_ELEM} * T * C",
                "eager (8 kernels): cast to fp32 (b + 4), square (8), row mean (4), + eps and rsqrt on T values,"
                " x * rsqrt (8), cast back (4 + b), * weight (2b): io bytes = (4b + 28) * T * C + 24 * T + w * C",
                "weights = C")

    def __init__(self, name: str, stage: Stage, *, tokens: int, dim: int, act_bytes: int, weight_bytes: int) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        self.params = dim
        self.op(OperatorCategory.NORM, cc_flops=RMSNORM_FLOPS_PER_ELEM * tokens * dim,
                io_bytes=(4 * act_bytes + 28) * tokens * dim + 24 * tokens + weight_bytes * dim, launches=8)
        self.activation_bytes = act_bytes * tokens * dim


class Elementwise(BaseLayer):
    """An elementwise op over E elements with r inputs read and one output written (residual add, activation)."""

    summary = "elementwise op (activation, residual add)"
    formulas = ("CUDA-core FLOPs = f * E (f FLOPs per element)", "io bytes = b * E * (inputs + 1)")

    def __init__(self, name: str, stage: Stage, *, elements: int, flops_per_elem: float, inputs: int,
                 act_bytes: int, weight_bytes: int, category: OperatorCategory = OperatorCategory.ELEMENTWISE,
                 launches: int = 1, pattern: str | None = None) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        self.op(category, cc_flops=flops_per_elem * elements, io_bytes=act_bytes * elements * (inputs + 1),
                launches=launches, pattern=pattern)
        self.activation_bytes = act_bytes * elements


class AttentionCore(BaseLayer):
    """softmax(Q K^T * scale + bias) V for N = batch*heads independent (S_q x S_k) problems of head dim d.

    ``fused`` (SDPA / flash kernels) keeps scores on chip; the eager path writes
    the S_q x S_k scores, reads them for the softmax, writes probabilities in
    ``score_bytes`` per element and reads them again for P V.
    ``causal_skip`` (flash with a causal mask) computes only the lower triangle.
    """

    summary = "attention core: scores, softmax, weighted sum of values"
    formulas = (
        "scores QK^T: tensor-core FLOPs = 2 * N * S_q * S_k * d",
        "P V:         tensor-core FLOPs = 2 * N * S_q * S_k * d",
        f"softmax + scale/mask: CUDA-core FLOPs = ({SOFTMAX_FLOPS_PER_ELEM} + 1 + bias) * N * S_q * S_k",
        "fused io bytes = b * N * d * (2 S_q + 2 S_k)   (read Q, K, V, write O)",
        "eager io bytes = fused + N * S_q * S_k * (b_s*2 [write+read scores] + b_p*2 [write+read probs] (+ b bias))"
        " unless the caller gives its eager chain's bytes per score",
        "causal flash kernels compute S_q*S_k - S_q*(S_q-1)/2 score entries instead of S_q*S_k",
    )

    def __init__(self, name: str, stage: Stage, *, groups: int, q_len: int, k_len: float, head_dim: int,
                 fused: bool, causal_skip: bool, act_bytes: int, weight_bytes: int, score_bytes: int,
                 prob_bytes: int, has_bias: bool, eager_launches: int, extra_cc_per_score: float = 0.0,
                 eager_bytes_per_score: float | None = None) -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_bytes)
        entries = q_len * k_len
        if causal_skip and q_len > 1:
            entries = q_len * k_len - q_len * (q_len - 1) // 2
        scores = groups * entries
        cc = (SOFTMAX_FLOPS_PER_ELEM + 1 + (1 if has_bias else 0) + extra_cc_per_score) * scores
        per_score = (eager_bytes_per_score if eager_bytes_per_score is not None
                     else 2 * score_bytes + 2 * prob_bytes + (act_bytes if has_bias else 0))
        operands = act_bytes * groups * head_dim * (q_len + k_len)  # q and k (scores), v and the output (PV)
        # a decode group's mean KV length may be fractional (n forwards from KV k: k + (n - 1) / 2): its FLOPs and
        # bytes stay exact, and its GEMM key takes the nearest whole length (half up) so a measured time applies,
        # charged in proportion (k_len / kn calls of that shape)
        whole = float(q_len).is_integer() and q_len >= 1 and k_len >= 1
        if fused or causal_skip or not whole or eager_launches < 2 or per_score < 2 * act_bytes:
            self.op(OperatorCategory.ATTENTION, tc_flops=2 * 2 * scores * head_dim, cc_flops=cc,
                    io_bytes=2 * operands + (0 if fused else groups * q_len * k_len * per_score),
                    launches=1 if fused else eager_launches)
        else:
            # eager: the two batched products as GEMMs of measurable shape (QK^T writes the scores, PV reads
            # the probabilities, b bytes each), the rest of the chain (scale, mask, casts, softmax) around them
            qn, kn = int(q_len), int(k_len + 0.5)
            calls = k_len / kn  # 1 unless k_len is fractional: the share of the KV-kn shape's FLOPs one call makes
            self.op(OperatorCategory.ATTENTION, tc_flops=2 * scores * head_dim,
                    io_bytes=operands + act_bytes * scores, launches=1,
                    gemm=gemm_key("bmm_nt", groups, qn, kn, head_dim), gemm_calls=calls)
            self.op(OperatorCategory.ATTENTION, tc_flops=2 * scores * head_dim,
                    io_bytes=operands + act_bytes * scores, launches=1,
                    gemm=gemm_key("bmm_nn", groups, qn, head_dim, kn), gemm_calls=calls)
            self.op(OperatorCategory.ATTENTION, cc_flops=cc, io_bytes=scores * (per_score - 2 * act_bytes),
                    launches=eager_launches - 2)
        self.activation_bytes = act_bytes * groups * q_len * head_dim
        if not fused:
            self.activation_bytes += groups * q_len * k_len * (score_bytes + prob_bytes)
