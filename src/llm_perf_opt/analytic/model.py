"""The analytic module tree of DeepSeek-OCR for one workload, stage by stage.

Node names are the executable model's module paths
(``llm_perf_opt.models.deepseek_ocr.modeling``), so a node's path can be used
as a key into ``model.named_modules()``::

    vision.sam   model.sam_model            (global view call, then the tiles call)
    vision.clip  model.vision_model         (same two calls)
    projector    model.projector            (two calls) + model.embed_images (newline/separator layout)
    prefill      model.merge_embeddings, model.language.embed_tokens, model.language.rotary_emb,
                 model.language.layers.{i}, model.language.norm, lm_head (last position only)
    decode       the same decoder nodes for ONE step (one new token per sequence, KV length L)

The vision stages run once per request; the measured ``prefill`` range of the
profiler wraps the three vision stages AND the decoder pass, while the
analytic ``prefill`` stage is the decoder pass alone (add the vision stages
for the measured range).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from llm_perf_opt.analytic.base import BaseLayer, OpGroup, RequestRoot, StageCost, TreeMemo
from llm_perf_opt.analytic.layers.decoder import (
    MASK_SYNCS,
    DecoderLayer,
    Embedding,
    FinalNorm,
    ImageTokenMerge,
    LMHead,
)
from llm_perf_opt.analytic.layers.llama import RotaryEmbedding
from llm_perf_opt.analytic.layers.vision import (
    ClipEncoder,
    FeatureFusion,
    ImageTokenLayout,
    Projector,
    SamEncoder,
)
from llm_perf_opt.analytic.workloads import RequestShape, request_shape
from llm_perf_opt.data.analytic import OCRWorkloadProfile
from llm_perf_opt.data.common import AttentionKind
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.vocab import DTYPE_BYTES, OperatorCategory, Stage

#: Executable-model module paths of the top modules (keys for per-module checks).
SAM_PATH = "model.sam_model"
CLIP_PATH = "model.vision_model"
PROJECTOR_PATH = "model.projector"
LAYOUT_PATH = "model.embed_images"
MERGE_PATH = "model.merge_embeddings"
LANGUAGE_PATH = "model.language"
LM_HEAD_PATH = "lm_head"
#: launches per decode forward outside the layer tree and the n-gram ban (the greedy step's argmax, token and
#: mask appends, logits cast; cuBLAS split-K kernels): the H200 kernel census counts 51 launches per forward
#: beyond the tree at batch 1, of which 9.33 are the ban's (reports/profile/h200-census/census-h200.json); with
#: the ban off it counts 41.7 at batch 1 and 42.7 at batch 4 (census-h200-ngram0.json). The one launch more
#: at batch 4 (also with the ban on, and at Gundam b2) is left out
DECODE_STEP_LAUNCHES = 41.7
#: launches of the n-gram ban per batch row and token pick: its eq, all, zeros, int32 cast, scatter_reduce_,
#: bool cast and masked_fill_ on each row in a Python loop. Counted: 9.33 per forward at batch 1 in the census
#: (4 picks over 3 forwards, 51 - 41.7 with the ban off), and 7.46 and 7.47 per row and forward in the
#: profiler passes (16 picks over 15 forwards) of Small b32 and Base b16 with the ban on and off
#: (reports/profile/h200-*-ngram{0,20}-20261204T195740Z, operator_table.json stage_kernels). A forward
#: carries new_tokens / forwards picks (:func:`ngram_ban_picks`).
NGRAM_BAN_ROW_LAUNCHES = 7.0
#: bytes the ban moves per row and pick, in vocabulary entries: the int32 zeros (4), their bool copy (4 + 1),
#: masked_fill_ reading the mask (1) and the fp32 logits row (4 + 4); its history windows are ~100x smaller
NGRAM_BAN_ROW_VOCAB_BYTES = 18
#: host cost of one of the ban's launches as a fraction of a decoder op's (bare tensor calls in a Python loop,
#: no module around them): the median of six fits of a decode forward, in each pass's module-probe calls,
#: against batch size (1 to 64, Small and Base) on four H200 hosts, 0.40 to 0.74
#: (scripts/gpu/decode_rows.py --from reports/hardware/h200/decode-rows-*.json; docs/results-h200.md s. 21-22)
DECODE_ROW_HOST_WEIGHT = 0.60
#: the same for the prefill forward (same census; base b1 35, base b4 53, gundam b2 49 launches)
PREFILL_SETUP_LAUNCHES = 29.0
PREFILL_ROW_LAUNCHES = 6.0

#: the timeline model runs the decode as this many groups of consecutive forwards, each group's step at its own
#: mean KV length. A step takes the longer of its host and its device time, so a decode whose device time
#: overtakes the host's as the cache grows is slower than its mean step: at 1,024 new tokens the mean step
#: makes the decode up to 10.8% short (Small b448, ban off, an H200 prior); 8 groups are within 0.11% of
#: simulating every forward over Small, Base and Gundam at b256-768 (docs/results-h200.md section 23;
#: tests/unit/test_decode_segments.py)
DECODE_KV_SEGMENTS = 8

#: Routing counts: decoder layer index -> tokens routed to each expert (length E) in one forward.
Routing = Mapping[int, Sequence[int]]


def ngram_ban_picks(prefill_tokens: int, new_tokens: int, n: int) -> int:
    """Token picks of a request (of ``new_tokens``) at which the n-gram ban of size ``n`` runs: those where the
    row's history (prompt of ``prefill_tokens`` plus the tokens picked so far) holds at least ``n`` ids, as
    ``generation.ban_repeated_ngrams`` skips shorter ones; 0 when ``n`` is 0 (no ban)."""
    if n <= 0:
        return 0
    return new_tokens - max(0, min(new_tokens, n - prefill_tokens))


def decoder_layer_path(index: int) -> str:
    """Module path of decoder layer ``index``."""
    return f"{LANGUAGE_PATH}.layers.{index}"


class AnalyticModel:
    """Stage trees of one (config, workload) pair; every query is arithmetic on fixed shapes.

    ``routing_prefill`` / ``routing_decode`` (optional) give the tokens per expert
    of each MoE layer seen in a real run; without them the routed experts'
    weight traffic uses the uniform-routing expectation.
    """

    def __init__(self, config: DeepseekOCRConfig, workload: OCRWorkloadProfile, *,
                 routing_prefill: Routing | None = None, routing_decode: Routing | None = None) -> None:
        self.config = config
        self.workload = workload
        self.shape: RequestShape = request_shape(workload, config.language.max_position_embeddings)
        self.act_bytes = DTYPE_BYTES[workload.dtype]
        self.weight_bytes = DTYPE_BYTES[workload.dtype]
        self.fused = workload.attention != AttentionKind.EAGER
        self.causal_skip = workload.attention == AttentionKind.FLASH
        self.routing_prefill = routing_prefill or {}
        self.routing_decode = routing_decode or {}
        #: GPU-independent sums over this model's trees (the stages and the decode steps it built), shared by
        #: every report of the model (llm_perf_opt.analytic.report.build_report)
        self.memo = TreeMemo()
        #: decode steps built with the run's routing, by KV length (the trees are fixed once built)
        self._steps: dict[float, StageCost] = {}
        #: the children of the decode steps' layers that do not depend on the KV length, shared by the steps of
        #: :meth:`decode_step` (built once; only self_attn differs between two KV lengths), keyed by layer kind:
        #: -1 the dense layers, -2 the MoE layers, or a layer's index where routing counts give it its own
        self._step_parts: dict[int, dict[str, BaseLayer]] = {}
        self._weight_bytes: float | None = None
        #: vision stages built for another batch (vision_stages_at), by batch
        self._vision_at: dict[int, dict[Stage, StageCost]] = {}
        self.stages: dict[Stage, StageCost] = {
            Stage.VISION_SAM: self._sam(),
            Stage.VISION_CLIP: self._clip(),
            Stage.PROJECTOR: self._projector(),
            Stage.PREFILL: self._decoder(Stage.PREFILL, q_len=self.shape.prefill_tokens,
                                         kv_len=self.shape.prefill_tokens, logits_tokens=1,
                                         routing=self.routing_prefill),
        }
        first = self.shape.decode_kv_len(0)
        #: decode step at the mean KV length: FLOPs and bytes are linear in L, so
        #: (number of steps) x (this step) is exact for the sums over all steps
        self.decode_mean_kv_len = first + (self.shape.decode_forwards - 1) / 2 if self.shape.decode_forwards else first
        self.stages[Stage.DECODE] = self.decode_step(self.decode_mean_kv_len)

    # ------------------------------------------------------------ views
    def views(self, batch: int | None = None) -> list[tuple[str, int, int]]:
        """Vision calls in execution order: (label, views per call, side in pixels), for ``batch`` pages of this
        workload's layout (default: the workload's batch)."""
        b = self.shape.batch if batch is None else batch
        out = []
        if self.shape.layout.num_tiles:
            out.append(("tiles", b * self.shape.layout.num_tiles, self.shape.tile_side_px))
        out.append(("global", b, self.shape.global_side_px))
        return out

    def vision_stages_at(self, batch: int) -> dict[Stage, StageCost]:
        """SAM, CLIP and the projector built for ``batch`` pages of this workload's layout (new trees, e.g. the
        bytes per page at another batch: over one view SAM's global call copies no qkv, over several it does)."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if batch not in self._vision_at:
            self._vision_at[batch] = {Stage.VISION_SAM: self._sam(batch), Stage.VISION_CLIP: self._clip(batch),
                                      Stage.PROJECTOR: self._projector(batch)}
        return self._vision_at[batch]

    def _sam(self, batch: int | None = None) -> StageCost:
        stage = StageCost(Stage.VISION_SAM.value, Stage.VISION_SAM, weight_dtype_bytes=self.weight_bytes)
        for _label, n, side in self.views(batch):
            enc = stage.add(SamEncoder(SAM_PATH, Stage.VISION_SAM, self.config.sam, views=n, side_px=side,
                                       fused=self.fused, act_bytes=self.act_bytes, weight_bytes=self.weight_bytes))
            # each call's feature map stays referenced (CLIP and the projector read it), so a page's tiles'
            # maps are live while its global view runs
            enc.kept_bytes = self._sam_out_bytes(n, side)
        return stage

    def _sam_out_bytes(self, views: int, side_px: int) -> float:
        """Bytes of SAM's output for ``views`` views of ``side_px``: [N, c_3, q, q] at the activation dtype."""
        q = self.sam_out_side(side_px)
        return float(self.act_bytes * views * self.config.sam.downsample_channels[-1] * q * q)

    def _clip_out_bytes(self, views: int, side_px: int) -> float:
        """Bytes of CLIP's output for ``views`` views of ``side_px``: [N, q^2 + 1, width] (the CLS-dropped slice
        the projector reads is a view of it)."""
        q = self.sam_out_side(side_px)
        return float(self.act_bytes * views * (q * q + 1) * self.config.clip.width)

    def sam_out_side(self, side_px: int) -> int:
        """Token-grid side of a view after SAM's two stride-2 convs: side / patch / 4."""
        g = side_px // self.config.sam.patch_size
        g2 = (g + 2 - 3) // 2 + 1
        return (g2 + 2 - 3) // 2 + 1

    def _clip(self, batch: int | None = None) -> StageCost:
        stage = StageCost(Stage.VISION_CLIP.value, Stage.VISION_CLIP, weight_dtype_bytes=self.weight_bytes)
        views = self.views(batch)
        # every SAM map (the calls' inputs and the projector's) is live through the stage
        stage.held_bytes = sum(self._sam_out_bytes(n, side) for _label, n, side in views)
        for _label, n, side in views:
            enc = stage.add(ClipEncoder(CLIP_PATH, Stage.VISION_CLIP, self.config.clip, views=n,
                                        grid=self.sam_out_side(side), fused=self.fused, act_bytes=self.act_bytes,
                                        weight_bytes=self.weight_bytes))
            enc.kept_bytes = self._clip_out_bytes(n, side)
        return stage

    def _projector(self, batch: int | None = None) -> StageCost:
        pages = self.shape.batch if batch is None else batch
        stage = StageCost(Stage.PROJECTOR.value, Stage.PROJECTOR, weight_dtype_bytes=self.weight_bytes)
        views = self.views(pages)
        # the SAM and CLIP outputs of every call stay referenced until the image embeddings are built
        stage.held_bytes = sum(self._sam_out_bytes(n, side) + self._clip_out_bytes(n, side) for _label, n, side in views)
        for _label, n, side in views:
            q = self.sam_out_side(side)
            tokens = n * q * q
            stage.add(FeatureFusion("model.fusion", Stage.PROJECTOR, tokens=tokens, dim=self.config.projector.input_dim,
                                    act_bytes=self.act_bytes, weight_bytes=self.weight_bytes, images=pages))
            proj = stage.add(Projector(PROJECTOR_PATH, Stage.PROJECTOR, self.config.projector, tokens=tokens,
                                       act_bytes=self.act_bytes, weight_bytes=self.weight_bytes))
            # its input, the fusion's concatenation, is live until the projection is done
            proj.held_bytes = float(self.act_bytes * tokens * self.config.projector.input_dim)
            # the projected tokens are sliced per page (views of it) and laid out after the last group
            proj.kept_bytes = float(self.act_bytes * tokens * self.config.projector.n_embed)
        layout = self.shape.layout
        q_t = self.sam_out_side(self.shape.tile_side_px) if layout.num_tiles else 0
        stage.add(ImageTokenLayout(LAYOUT_PATH, Stage.PROJECTOR, slots=pages * layout.prompt_slots,
                                   hidden=self.config.language.hidden_size, act_bytes=self.act_bytes,
                                   weight_bytes=self.weight_bytes, images=pages,
                                   local_tokens=pages * layout.num_tiles * q_t * q_t))
        return stage

    # ---------------------------------------------------------- decoder
    def _decoder(self, stage_name: Stage, *, q_len: int, kv_len: float, logits_tokens: int,
                 routing: Routing, shared: dict[int, dict[str, BaseLayer]] | None = None) -> StageCost:
        lang = self.config.language
        b = self.shape.batch
        tokens = b * q_len
        ab, wb = self.act_bytes, self.weight_bytes
        stage = StageCost(stage_name.value, stage_name, weight_dtype_bytes=wb)
        if stage_name == Stage.PREFILL:
            stage.add(ImageTokenMerge(MERGE_PATH, stage_name, image_tokens=b * self.shape.layout.prompt_slots,
                                      tokens=tokens, hidden=lang.hidden_size, act_bytes=ab, weight_bytes=wb, rows=b))
        stage.add(Embedding(f"{LANGUAGE_PATH}.embed_tokens", stage_name, tokens=tokens, vocab=lang.vocab_size,
                            hidden=lang.hidden_size, act_bytes=ab, weight_bytes=wb))
        rotary = stage.add(RotaryEmbedding(f"{LANGUAGE_PATH}.rotary_emb", stage_name, rows=b, positions=q_len,
                                           head_dim=lang.head_dim, act_bytes=ab, weight_bytes=wb))
        # the causal mask, built between the embedding and the rotary tables, syncs once per forward
        # (eager and SDPA attention alike)
        rotary.host_syncs = MASK_SYNCS
        # layers of equal routing (all but the counted ones) are the same work: they hold the same nodes, built
        # once (and, through ``shared``, once for every decode step); so is every layer's attention in a forward
        parts = shared if shared is not None else {}
        attention: BaseLayer | None = None
        for i in range(lang.num_hidden_layers):
            counted = routing.get(i)
            kind = i if counted is not None else -1 - int(lang.is_moe_layer(i))  # -1 dense, -2 MoE
            layer = DecoderLayer(decoder_layer_path(i), stage_name, lang, index=i, batch=b, q_len=q_len,
                                 kv_len=kv_len, fused=self.fused, causal_skip=self.causal_skip, act_bytes=ab,
                                 weight_bytes=wb, tokens_per_expert=counted,
                                 experts_implementation=self.workload.experts, shared=parts.setdefault(kind, {}),
                                 attention=attention)
            stage.add(layer)
            attention = layer.self_attn
        stage.add(FinalNorm(f"{LANGUAGE_PATH}.norm", stage_name, tokens=tokens, dim=lang.hidden_size, act_bytes=ab,
                            weight_bytes=wb))
        stage.add(LMHead(LM_HEAD_PATH, stage_name, tokens=b * logits_tokens, hidden=lang.hidden_size,
                         vocab=lang.vocab_size, act_bytes=ab, weight_bytes=wb))
        if stage_name == Stage.PREFILL:
            setup = stage.add(OpGroup("setup", stage_name, weight_dtype_bytes=wb,
                                      summary="prefill outside the modules: masks, positions, cache set-up, "
                                              "logits cast; cuBLAS split-K kernels"))
            # fitted exactly to the census's batch-1 and batch-4 prefills (35 and 53 launches beyond the tree)
            setup.op(OperatorCategory.MEMORY, io_bytes=4 * b * lang.vocab_size,
                     launches=PREFILL_SETUP_LAUNCHES + PREFILL_ROW_LAUNCHES * b)
        if stage_name == Stage.DECODE:
            gen = stage.add(OpGroup("generation", stage_name, weight_dtype_bytes=wb,
                                    summary="greedy step outside the modules: argmax, token and mask appends, "
                                            "logits cast, cuBLAS split-K kernels of the step; the n-gram ban"))
            # launches per decode forward that the layer tree does not itemise, from the H200 kernel
            # census with the ban off (reports/profile/h200-census/census-h200-ngram0.json: 41.7 at batch 1)
            gen.op(OperatorCategory.MEMORY, io_bytes=2 * 4 * b * lang.vocab_size, launches=DECODE_STEP_LAUNCHES)
            bans = b * self.ban_picks_per_forward()
            if bans:
                gen.light_op(OperatorCategory.MEMORY, NGRAM_BAN_ROW_LAUNCHES * bans, host_weight=DECODE_ROW_HOST_WEIGHT,
                             io_bytes=NGRAM_BAN_ROW_VOCAB_BYTES * lang.vocab_size * bans)
        return stage

    def ban_picks_per_forward(self) -> float:
        """Token picks per decode forward at which the n-gram ban runs (:func:`ngram_ban_picks` over the
        forwards; the last pick has no forward after it)."""
        if not self.shape.decode_forwards:  # one new token: no decode forward to carry the pick
            return 0.0
        picks = ngram_ban_picks(self.shape.prefill_tokens, self.shape.new_tokens, self.workload.no_repeat_ngram_size)
        return picks / self.shape.decode_forwards

    def decode_step(self, kv_len: float, routing: Routing | None = None) -> StageCost:
        """One decode forward (B new tokens) attending over ``kv_len`` positions; without ``routing`` the
        model's own step at that length, built once (the same tree on every call)."""
        if routing is not None:
            return self._decoder(Stage.DECODE, q_len=1, kv_len=kv_len, logits_tokens=1, routing=routing)
        step = self._steps.get(kv_len)
        if step is None:
            step = self._decoder(Stage.DECODE, q_len=1, kv_len=kv_len, logits_tokens=1, routing=self.routing_decode,
                                 shared=self._step_parts)
            self._steps[kv_len] = step
        return step

    def decode_segments(self, segments: int = DECODE_KV_SEGMENTS) -> list[tuple[int, float]]:
        """(forwards, their mean KV length) of ``segments`` groups of consecutive decode forwards (fewer when
        there are fewer forwards; the forwards sum to ``shape.decode_forwards``)."""
        if segments < 1:
            raise ValueError(f"segments must be >= 1, got {segments}")
        total = self.shape.decode_forwards
        k = min(segments, total)
        out: list[tuple[int, float]] = []
        start = 0
        for i in range(k):
            end = (i + 1) * total // k
            n = end - start
            out.append((n, self.shape.decode_kv_len(start) + (n - 1) / 2))
            start = end
        return out

    def decode_segment_steps(self, segments: int = DECODE_KV_SEGMENTS) -> list[tuple[StageCost, int]]:
        """The decode step of each of :meth:`decode_segments` with its forwards (the timeline model's decode;
        FLOPs and bytes summed over them equal ``stages[DECODE]`` times the forwards)."""
        return [(self.decode_step(kv), n) for n, kv in self.decode_segments(segments)]

    # ----------------------------------------------------------- totals
    def root(self) -> RequestRoot:
        """All stages under one node (one request: vision once, prefill once, decode = ONE mean step)."""
        root = RequestRoot("request", Stage.PREFILL, weight_dtype_bytes=self.weight_bytes)
        for stage in self.stages.values():
            root.add(stage)
        return root

    def weight_bytes_total(self) -> float:
        """Resident weight bytes of the whole model (every parameter once)."""
        if self._weight_bytes is None:
            self._weight_bytes = self.root().forward_memory_weight()
        return self._weight_bytes

    def kv_cache_bytes_final(self) -> float:
        """KV cache after the last decode forward: 2 * B * L_final * layers * h_kv * d * b."""
        lang = self.config.language
        return float(2 * self.shape.batch * self.shape.final_kv_len * lang.num_hidden_layers
                     * lang.num_key_value_heads * lang.head_dim * self.act_bytes)

    def kv_cache_bytes_after_prefill(self) -> float:
        """KV cache right after prefill (what the executable model's DynamicCache holds)."""
        return self.stages[Stage.PREFILL].forward_memory_kvcache()
