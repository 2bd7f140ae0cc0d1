"""Executable DeepSeek-OCR (v1): transformers' own modules plus the v1-only glue.

Reused from transformers (same architecture, see FACTS.md):
- SAM ViT-B: ``DeepseekOcr2SamVisionEncoder`` with downsample channels from the config ([512, 1024] for v1).
- Text decoder: ``DeepseekOcr2TextModel`` (plain MHA, layer 0 dense SwiGLU, MoE layers with softmax
  router, greedy top-k, no renormalisation, routed scaling 1.0, fused shared experts).
- CLIP layers: ``CLIPEncoderLayer``. The checkpoint's fused ``qkv_proj`` is split into q/k/v at load
  (rows [0:W) = q, [W:2W) = k, [2W:3W) = v, the order the reference code unbinds them in), so CLIP
  runs three W x W GEMMs where the reference runs one 3W x W GEMM (same FLOPs, three launches).

Written here (v1's own): CLIP embeddings fed by SAM features (CLS + interpolated 257-entry position
embedding; the CLIP patch-embedding conv is kept as an unused parameter because the checkpoint holds
it), the pre-LayerNorm, fusion to 2048 channels, the linear projector, the newline/separator layout
and the merge of image embeddings into the ``<image>`` slots.

Module paths (stable; the analytic model keys per-module FLOPs on them)::

    model.sam_model                       SAM encoder (patch_embed, pos_embed, layers[i], neck, proj)
    model.vision_model                    CLIP (embeddings, pre_layrnorm, transformer.layers[i])
    model.projector.layers                Linear(2048 -> 1280)
    model.image_newline, model.view_seperator
    model.language                        DeepseekOcr2TextModel
    model.language.embed_tokens
    model.language.layers[i].self_attn    q_proj/k_proj/v_proj/o_proj
    model.language.layers[i].mlp          layer 0: gate_proj/up_proj/down_proj
                                          MoE layers: gate (router), experts (packed), shared_experts
    model.language.layers[i].input_layernorm / post_attention_layernorm
    model.language.norm
    lm_head
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.clip.configuration_clip import CLIPVisionConfig
from transformers.models.clip.modeling_clip import CLIPEncoderLayer
from transformers.models.deepseek_ocr2.configuration_deepseek_ocr2 import (
    DeepseekOcr2SamVisionConfig,
    DeepseekOcr2TextConfig,
)
from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import (
    DeepseekOcr2SamVisionEncoder,
    DeepseekOcr2TextModel,
    apply_rotary_pos_emb,
)

from llm_perf_opt.errors import UserError
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.vocab import EXPERTS_IMPLEMENTATIONS, Stage

if TYPE_CHECKING:
    from llm_perf_opt.models.deepseek_ocr.preprocess import PreprocessedImage

#: ``scope(stage_name) -> context manager``: the profiler's hook around each stage.
Scope = Callable[[str], AbstractContextManager[Any]]

ATTN_IMPLEMENTATIONS = ("eager", "sdpa")
#: transformers' expert kernels usable here. 'grouped_mm' is transformers' default: (token, expert) pairs
#: sorted by expert, two grouped GEMMs with per-expert offsets (torch grouped_mm; transformers falls back
#: to a per-expert loop where torch lacks the kernel); 'batched_mm' gathers per-pair weights and runs bmm;
#: 'eager' is the per-hit-expert Python loop of DeepseekOcr2TextExperts.forward (tuple in vocab).

#: Std of the random initialisation (transformers' DeepseekOcr2 initializer_range default).
INIT_STD = 0.02


def null_scope(stage: str) -> AbstractContextManager[Any]:
    """Default scope: no-op context."""
    return contextlib.nullcontext()


def sam_hf_config(config: DeepseekOCRConfig, attn_implementation: str) -> DeepseekOcr2SamVisionConfig:
    """transformers SAM config equal to ``config.sam``."""
    s = config.sam
    hf = DeepseekOcr2SamVisionConfig(
        hidden_size=s.width, output_channels=s.out_chans, num_hidden_layers=s.depth,
        num_attention_heads=s.heads, image_size=s.img_size, patch_size=s.patch_size,
        layer_norm_eps=s.layer_norm_eps, window_size=s.window_size,
        global_attn_indexes=list(s.global_attn_indexes), mlp_dim=s.mlp_dim,
        downsample_channels=list(s.downsample_channels),
    )
    hf._attn_implementation = attn_implementation
    return hf


def clip_hf_config(config: DeepseekOCRConfig, attn_implementation: str) -> CLIPVisionConfig:
    """transformers CLIP vision config equal to ``config.clip`` (quick_gelu, as CLIP-L/14)."""
    c = config.clip
    hf = CLIPVisionConfig(
        hidden_size=c.width, intermediate_size=c.mlp_dim, num_hidden_layers=c.layers,
        num_attention_heads=c.heads, image_size=c.image_size, patch_size=c.patch_size,
        hidden_act="quick_gelu", layer_norm_eps=c.layer_norm_eps,
    )
    hf._attn_implementation = attn_implementation
    return hf


def text_hf_config(config: DeepseekOCRConfig, attn_implementation: str,
                   experts_implementation: str, **overrides: Any) -> DeepseekOcr2TextConfig:
    """transformers text config equal to ``config.language`` (``overrides``: config fields to replace)."""
    lang = config.language
    fields: dict[str, Any] = dict(
        vocab_size=lang.vocab_size, hidden_size=lang.hidden_size, intermediate_size=lang.intermediate_size,
        moe_intermediate_size=lang.moe_intermediate_size, num_hidden_layers=lang.num_hidden_layers,
        num_attention_heads=lang.num_attention_heads, num_key_value_heads=lang.num_key_value_heads,
        n_routed_experts=lang.n_routed_experts, n_shared_experts=lang.n_shared_experts,
        num_experts_per_tok=lang.num_experts_per_tok, routed_scaling_factor=lang.routed_scaling_factor,
        topk_method="greedy", n_group=1, topk_group=1,
        mlp_layer_types=["sparse" if lang.is_moe_layer(i) else "dense" for i in range(lang.num_hidden_layers)],
        max_position_embeddings=lang.max_position_embeddings, rms_norm_eps=lang.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": lang.rope_theta},
        pad_token_id=lang.pad_token_id, bos_token_id=lang.bos_token_id, eos_token_id=lang.eos_token_id,
        tie_word_embeddings=False, hidden_act="silu",
    )
    fields.update(overrides)
    hf = DeepseekOcr2TextConfig(**fields)
    hf._attn_implementation = attn_implementation
    hf._experts_implementation = experts_implementation
    return hf


class ClipEmbeddings(nn.Module):
    """v1 CLIP embeddings: SAM feature map as patch embeddings, CLS prepended, interpolated positions.

    ``patch_embedding`` (Conv 3 -> W, kernel/stride = patch, no bias) is never called: v1 feeds the SAM
    output instead. It is kept so the module's parameters equal the checkpoint's tensors.
    """

    def __init__(self, width: int, image_size: int, patch_size: int) -> None:
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.patch_embedding = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.num_positions = (image_size // patch_size) ** 2 + 1
        self.position_embedding = nn.Embedding(self.num_positions, width)

    def interpolated_positions(self, grid: int) -> torch.Tensor:
        """Position table for a grid x grid map plus CLS: [grid*grid + 1, W].

        Bicubic (antialias, align_corners=False) resize of the 16x16 table in fp32, as the reference.
        """
        table = self.position_embedding.weight
        src = int(math.isqrt(self.num_positions - 1))
        if src == grid:
            return table
        cls_pos, grid_pos = table[:1], table[1:]
        dim = table.shape[-1]
        grid_pos = grid_pos.reshape(1, src, src, dim).permute(0, 3, 1, 2).to(torch.float32)
        grid_pos = F.interpolate(grid_pos, size=(grid, grid), mode="bicubic", antialias=True, align_corners=False)
        grid_pos = grid_pos.to(table.dtype).permute(0, 2, 3, 1).reshape(grid * grid, dim)
        return torch.cat([cls_pos, grid_pos], dim=0)

    def forward(self, sam_features: torch.Tensor) -> torch.Tensor:
        """[N, W, q, q] SAM map -> [N, q*q + 1, W] tokens (CLS first)."""
        n, _, q, q2 = sam_features.shape
        if q != q2:
            raise ValueError(f"CLIP expects a square SAM map, got {q}x{q2}")
        patches = sam_features.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(patches.dtype).expand(n, 1, -1)
        tokens = torch.cat([cls, patches], dim=1)
        return tokens + self.interpolated_positions(q).to(tokens.dtype).unsqueeze(0)


class ClipTransformer(nn.Module):
    """Stack of transformers ``CLIPEncoderLayer`` (path ``transformer.layers[i]`` as in the checkpoint)."""

    def __init__(self, hf_config: CLIPVisionConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(hf_config) for _ in range(hf_config.num_hidden_layers)])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[N, T, W] -> [N, T, W]; full (non-causal) attention, no mask."""
        for layer in self.layers:
            hidden_states = layer(hidden_states, None)
        return hidden_states


class ClipVisionModel(nn.Module):
    """CLIP-L/14 of v1: embeddings from SAM features, pre-LayerNorm, encoder; no post-LayerNorm.

    transformers' ``CLIPVisionTransformer`` is not used as is: its embeddings run the patch conv on
    pixels (v1 feeds the SAM map) and it ends in a post-LayerNorm that v1 does not have. Its encoder
    layers (``CLIPEncoderLayer``) are used unchanged.
    """

    def __init__(self, config: DeepseekOCRConfig, attn_implementation: str) -> None:
        super().__init__()
        hf = clip_hf_config(config, attn_implementation)
        self.embeddings = ClipEmbeddings(config.clip.width, config.clip.image_size, config.clip.patch_size)
        self.pre_layrnorm = nn.LayerNorm(config.clip.width, eps=config.clip.layer_norm_eps)
        self.transformer = ClipTransformer(hf)

    def forward(self, sam_features: torch.Tensor) -> torch.Tensor:
        """[N, W, q, q] -> [N, q*q + 1, W] (CLS first)."""
        return self.transformer(self.pre_layrnorm(self.embeddings(sam_features)))


class Projector(nn.Module):
    """Linear projector (path ``projector.layers`` as in the checkpoint): [.., 2048] -> [.., 1280]."""

    def __init__(self, input_dim: int, n_embed: int) -> None:
        super().__init__()
        self.layers = nn.Linear(input_dim, n_embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DeepseekOCRModel(nn.Module):
    """Vision encoders, projector, layout tokens and the text decoder (no LM head)."""

    def __init__(self, config: DeepseekOCRConfig, attn_implementation: str = "eager",
                 experts_implementation: str = "grouped_mm") -> None:
        super().__init__()
        self.config = config
        self.sam_model = DeepseekOcr2SamVisionEncoder(sam_hf_config(config, attn_implementation))
        self.vision_model = ClipVisionModel(config, attn_implementation)
        self.projector = Projector(config.projector.input_dim, config.projector.n_embed)
        self.image_newline = nn.Parameter(torch.zeros(config.projector.n_embed))
        self.view_seperator = nn.Parameter(torch.zeros(config.projector.n_embed))  # sic, checkpoint name
        self.language = DeepseekOcr2TextModel(text_hf_config(config, attn_implementation, experts_implementation))


class DeepseekOCRForCausalLM(nn.Module):
    """DeepSeek-OCR v1: ``model`` (DeepseekOCRModel) and an untied ``lm_head``.

    Stage methods (used by generation and the profiler):
    ``encode_sam`` -> ``encode_clip`` -> ``project`` -> ``embed_images`` (layout).
    """

    def __init__(self, config: DeepseekOCRConfig, attn_implementation: str = "eager",
                 experts_implementation: str = "grouped_mm") -> None:
        super().__init__()
        self.config = config
        self.attn_implementation = attn_implementation
        self.experts_implementation = experts_implementation
        self.model = DeepseekOCRModel(config, attn_implementation, experts_implementation)
        self.lm_head = nn.Linear(config.language.hidden_size, config.language.vocab_size, bias=False)

    # ---- vision stages -------------------------------------------------------------------------------
    def encode_sam(self, pixels: torch.Tensor) -> torch.Tensor:
        """SAM + neck + two stride-2 convs: [N, 3, S, S] -> [N, C3, S/64, S/64] (C3 = 1024 for v1)."""
        pixels = pixels.to(device=self.lm_head.weight.device, dtype=self.lm_head.weight.dtype)
        return self.model.sam_model(pixels).last_hidden_state

    def encode_clip(self, sam_features: torch.Tensor) -> torch.Tensor:
        """CLIP on the SAM map: [N, C3, q, q] -> [N, q*q, clip_width] (CLS dropped)."""
        return self.model.vision_model(sam_features)[:, 1:]

    def project(self, clip_out: torch.Tensor, sam_features: torch.Tensor) -> torch.Tensor:
        """Concat [CLIP, SAM] channels and project: -> [N, q*q, hidden]."""
        fused = torch.cat([clip_out, sam_features.flatten(2).transpose(1, 2)], dim=-1)
        return self.model.projector(fused)

    def grid_with_newlines(self, tokens: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """[rows*cols, q*q, D] tile tokens -> [(q*rows) * (q*cols + 1), D], a newline closing each row."""
        n, qq, dim = tokens.shape
        q = int(math.isqrt(qq))
        grid = tokens.reshape(rows, cols, q, q, dim).permute(0, 2, 1, 3, 4).reshape(rows * q, cols * q, dim)
        newline = self.model.image_newline.to(grid.dtype).reshape(1, 1, dim).expand(rows * q, 1, dim)
        return torch.cat([grid, newline], dim=1).reshape(-1, dim)

    def embed_images(self, images: Sequence[PreprocessedImage], scope: Scope | None = None) -> list[torch.Tensor]:
        """Image embeddings per page in prompt order: [local grid + newlines, global grid + newlines, sep].

        Returns one [prompt_slots_i, hidden] tensor per image. Views of equal size are batched through
        each stage; ``scope`` wraps the SAM, CLIP and projector stages (vocab.Stage names).
        """
        scope = scope or null_scope
        groups: dict[tuple[int, ...], list[tuple[int, str, torch.Tensor]]] = {}
        for idx, img in enumerate(images):
            if img.layout.num_tiles:
                groups.setdefault(tuple(img.tiles.shape[-2:]), []).append((idx, "local", img.tiles))
            groups.setdefault(tuple(img.global_view.shape[-2:]), []).append(
                (idx, "global", img.global_view.unsqueeze(0)))
        sam_out: dict[tuple[int, ...], torch.Tensor] = {}
        clip_out: dict[tuple[int, ...], torch.Tensor] = {}
        with scope(Stage.VISION_SAM.value):
            for key, members in groups.items():
                sam_out[key] = self.encode_sam(torch.cat([m[2] for m in members], dim=0))
        with scope(Stage.VISION_CLIP.value):
            for key in groups:
                clip_out[key] = self.encode_clip(sam_out[key])
        parts: dict[tuple[int, str], torch.Tensor] = {}
        with scope(Stage.PROJECTOR.value):
            for key, members in groups.items():
                projected = self.project(clip_out[key], sam_out[key])
                start = 0
                for idx, kind, pix in members:
                    parts[(idx, kind)] = projected[start:start + pix.shape[0]]
                    start += pix.shape[0]
            out = []
            for idx, img in enumerate(images):
                seq = []
                if img.layout.num_tiles:
                    seq.append(self.grid_with_newlines(parts[(idx, "local")], img.layout.rows, img.layout.cols))
                glob = parts[(idx, "global")]
                seq.append(self.grid_with_newlines(glob, 1, 1))
                seq.append(self.model.view_seperator.to(glob.dtype).reshape(1, -1))
                emb = torch.cat(seq, dim=0)
                if emb.shape[0] != img.layout.prompt_slots:
                    raise RuntimeError(f"image {idx}: {emb.shape[0]} embeddings for {img.layout.prompt_slots} slots")
                out.append(emb)
        return out

    # ---- text ----------------------------------------------------------------------------------------
    def merge_embeddings(self, input_ids: torch.Tensor, image_mask: torch.Tensor,
                         image_embeds: Sequence[torch.Tensor]) -> torch.Tensor:
        """Token embeddings [B, L, D] with the ``<image>`` slots of row b replaced by ``image_embeds[b]``."""
        embeds = self.model.language.embed_tokens(input_ids.to(self.lm_head.weight.device))
        # slot positions are found on the host mask (no device sync; works on the meta device)
        mask = image_mask.cpu()
        for b, emb in enumerate(image_embeds):
            slots = mask[b].nonzero().flatten()
            if slots.numel() != emb.shape[0]:
                raise UserError(f"prompt row {b} has {slots.numel()} <image> slots but its image gives {emb.shape[0]}")
            embeds[b, slots.to(embeds.device)] = emb.to(embeds.dtype)
        return embeds

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values: Any = None,
                inputs_embeds: torch.Tensor | None = None, use_cache: bool = True,
                logits_to_keep: int = 0) -> tuple[torch.Tensor, Any]:
        """Decoder + LM head. Returns (logits [B, L or logits_to_keep, V], cache).

        Pass either ``input_ids`` [B, L] or ``inputs_embeds`` [B, L, D] (then ``input_ids`` may be None).
        """
        out = self.model.language(
            input_ids=None if inputs_embeds is not None else input_ids, inputs_embeds=inputs_embeds,
            attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, use_cache=use_cache,
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return self.lm_head(hidden), out.past_key_values


# ---- building ---------------------------------------------------------------------------------------

def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise UserError(f"{name} {value!r} is not one of {', '.join(choices)}")


def instantiate_on_meta(config: DeepseekOCRConfig, dtype: torch.dtype, attn_implementation: str,
                        experts_implementation: str) -> DeepseekOCRForCausalLM:
    """Module tree on the meta device with parameters in ``dtype`` (no memory)."""
    _check_choice("attn_implementation", attn_implementation, ATTN_IMPLEMENTATIONS)
    _check_choice("experts_implementation", experts_implementation, EXPERTS_IMPLEMENTATIONS)
    with torch.device("meta"):
        model = DeepseekOCRForCausalLM(config, attn_implementation, experts_implementation)
    for p in model.parameters():
        p.data = p.data.to(dtype)
    model.eval()
    return model


def reset_buffers(model: DeepseekOCRForCausalLM) -> None:
    """Recompute the non-persistent buffers (RoPE inverse frequencies, fp32) after ``to_empty``."""
    rot = model.model.language.rotary_emb
    inv_freq, scaling = rot.compute_default_rope_parameters(rot.config)
    with torch.no_grad():
        rot.inv_freq.copy_(inv_freq)
        rot.original_inv_freq.copy_(inv_freq)
    rot.attention_scaling = scaling


@torch.no_grad()
def init_random_(model: nn.Module, seed: int) -> None:
    """Seeded random weights: matrices/convs/embeddings ~ N(0, 0.02), biases 0, norm weights 1.

    Deterministic for a seed on a given device type (one generator on the parameters' device draws
    every tensor in parameter order; CPU and CUDA streams differ).
    """
    gens: dict[torch.device, torch.Generator] = {}
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        if isinstance(owner, nn.LayerNorm | nn.GroupNorm) or "norm" in type(owner).__name__.lower():
            p.fill_(1.0 if leaf == "weight" else 0.0)
        elif leaf == "bias" or leaf.startswith("rel_pos"):
            p.zero_()
        else:
            gen = gens.setdefault(p.device, torch.Generator(device=p.device).manual_seed(seed))
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32, device=p.device).mul_(INIT_STD))


def moe_layer(*, experts: int, top_k: int, hidden: int, intermediate: int, device: str | torch.device,
               dtype: torch.dtype, seed: int, experts_implementation: str = "grouped_mm") -> nn.Module:
    """One MoE MLP of the decoder (``DeepseekOcr2TextMoe``: ``gate``, ``experts``, ``shared_experts``) with E
    experts of width I and top-k greedy softmax routing, random weights as :func:`init_random_` draws them."""
    if experts_implementation not in EXPERTS_IMPLEMENTATIONS:
        raise UserError(f"experts implementation {experts_implementation!r} not in {EXPERTS_IMPLEMENTATIONS}")
    hf = DeepseekOcr2TextConfig(
        vocab_size=8, hidden_size=hidden, intermediate_size=intermediate, moe_intermediate_size=intermediate,
        num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1, n_routed_experts=experts,
        n_shared_experts=1, num_experts_per_tok=top_k, routed_scaling_factor=1.0, topk_method="greedy",
        n_group=1, topk_group=1, mlp_layer_types=["sparse"], tie_word_embeddings=False, hidden_act="silu",
    )
    hf._experts_implementation = experts_implementation
    with torch.device(device):
        moe: nn.Module = DeepseekOcr2TextModel(hf).get_submodule("layers.0.mlp").to(dtype=dtype)
    init_random_(moe, seed)
    return moe


def _normal_tokens(tokens: int, hidden: int, device: str | torch.device, dtype: torch.dtype, seed: int
                   ) -> torch.Tensor:
    """x [T, H] ~ N(0, 1) in ``dtype`` (an RMSNorm output), drawn by a generator seeded with ``seed``."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(tokens, hidden, generator=gen, device=device, dtype=torch.float32).to(dtype)


def routed_experts_program(*, experts: int, top_k: int, tokens: int, hidden: int, intermediate: int,
                           device: str | torch.device, dtype: torch.dtype = torch.bfloat16, seed: int = 0,
                           experts_implementation: str = "grouped_mm") -> Callable[[], torch.Tensor]:
    """A callable running the routed experts of one MoE layer as the decoder calls them:
    ``mlp.experts(x[T, H], top_k_index[T, k], top_k_weights[T, k] fp32) -> [T, H]``, transformers' module
    (``experts_implementation``) with E experts of width I, random weights as :func:`init_random_` draws
    them, and x ~ N(0, 1) (an RMSNorm output) routed once by the layer's own random router (softmax,
    greedy top-k), as the model with random weights routes. Used by the bench to time the whole call."""
    moe = moe_layer(experts=experts, top_k=top_k, hidden=hidden, intermediate=intermediate, device=device,
                     dtype=dtype, seed=seed, experts_implementation=experts_implementation)
    router, experts_module = moe.get_submodule("gate"), moe.get_submodule("experts")
    x = _normal_tokens(tokens, hidden, device, dtype, seed)
    with torch.no_grad():
        _logits, weights, index = router(x)

    def call() -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = experts_module(x, index, weights)
            return out

    return call


def moe_router_program(*, tokens: int, hidden: int, experts: int, top_k: int, device: str | torch.device,
                       dtype: torch.dtype = torch.bfloat16, seed: int = 0
                       ) -> Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """A callable running one MoE layer's router as the decoder calls it: ``mlp.gate(x[T, H])`` ->
    (fp32 logits [T, E], fp32 top-k weights [T, k], top-k expert indices [T, k]): x and the gate weight
    cast to fp32, the fp32 GEMM, softmax, greedy top-k; random gate weight, x ~ N(0, 1). Used by the bench."""
    router = moe_layer(experts=experts, top_k=top_k, hidden=hidden, intermediate=1, device=device,
                        dtype=dtype, seed=seed).get_submodule("gate")
    x = _normal_tokens(tokens, hidden, device, dtype, seed)

    def call() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] = router(x)
            return out

    return call


def rotary_program(*, batch: int, tokens: int, heads_q: int, heads_kv: int, head_dim: int,
                   device: str | torch.device, dtype: torch.dtype = torch.bfloat16, seed: int = 0
                   ) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """A callable applying the decoder's rotary embedding as its attention does: transformers'
    ``apply_rotary_pos_emb(q, k, cos, sin)`` on q [B, h_q, T, d] and k [B, h_kv, T, d] that are transposed
    views of the projections' [B, T, h * d] outputs, cos and sin [B, T, d]. Used by the bench."""
    gen = torch.Generator(device=device).manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device=device, dtype=torch.float32).to(dtype)

    q = rand(batch, tokens, heads_q * head_dim).view(batch, tokens, heads_q, head_dim).transpose(1, 2)
    k = rand(batch, tokens, heads_kv * head_dim).view(batch, tokens, heads_kv, head_dim).transpose(1, 2)
    cos, sin = rand(batch, tokens, head_dim), rand(batch, tokens, head_dim)

    def call() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            out: tuple[torch.Tensor, torch.Tensor] = apply_rotary_pos_emb(q, k, cos, sin)
            return out

    return call


#: head width of the host probe's decoder: every width is tiny, so its kernels take next to no device time
PROBE_HEAD_DIM = 8


def tiny_decoder_program(config: DeepseekOCRConfig | None = None, *, device: str | torch.device,
                         dtype: torch.dtype = torch.bfloat16, attn_implementation: str = "eager",
                         experts_implementation: str = "grouped_mm", seed: int = 0, dense_layers: int = 1,
                         moe_layers: int = 1) -> Callable[[], torch.Tensor]:
    """A callable running one decode-like forward of the decoder's own code at tiny widths: by default a
    two-layer ``DeepseekOcr2TextModel`` (a dense layer, then a MoE layer with the config's expert count and
    top-k; ``dense_layers`` and ``moe_layers`` change the counts), heads of PROBE_HEAD_DIM, every width a
    small multiple of it, one token of batch 1 and a fresh KV cache, random weights. It issues the
    kernels of a decode step's dense and MoE layers, in the attention and experts implementations given,
    with next to no device work: the host-speed probe of
    :class:`llm_perf_opt.profiling.timers.ModuleHostProbe`. Returns the last hidden state [1, 1, hidden]."""
    if dense_layers < 0 or moe_layers < 0 or dense_layers + moe_layers < 1:
        raise ValueError(f"tiny decoder: need >= 1 layer, got {dense_layers} dense and {moe_layers} MoE")
    config = config or DeepseekOCRConfig.default()
    lang = config.language
    hidden = lang.num_attention_heads * PROBE_HEAD_DIM
    hf = text_hf_config(config, attn_implementation, experts_implementation, vocab_size=64, hidden_size=hidden,
                        intermediate_size=2 * hidden, moe_intermediate_size=PROBE_HEAD_DIM,
                        num_hidden_layers=dense_layers + moe_layers,
                        mlp_layer_types=["dense"] * dense_layers + ["sparse"] * moe_layers)
    with torch.device(device):
        model: nn.Module = DeepseekOcr2TextModel(hf).eval()
    for p in model.parameters():  # the parameters in dtype, the RoPE buffers in fp32 (as build_model)
        p.data = p.data.to(dtype)
    init_random_(model, seed)
    ids = torch.zeros(1, 1, dtype=torch.long, device=device)

    def call() -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = model(input_ids=ids, use_cache=True).last_hidden_state
            return out

    return call


def build_model(config: DeepseekOCRConfig | None = None, *, device: str | torch.device = "meta",
                dtype: torch.dtype = torch.bfloat16, seed: int = 0, attn_implementation: str = "eager",
                experts_implementation: str = "grouped_mm") -> DeepseekOCRForCausalLM:
    """Build DeepSeek-OCR v1 from ``config`` (default: the published config) in eval mode.

    ``device='meta'``: shapes only, no memory (parameter counts, torchinfo, FLOP counting).
    Otherwise seeded random weights (see :func:`init_random_`) in ``dtype`` on ``device``.
    ``attn_implementation``: 'eager' or 'sdpa' (SAM, CLIP and the decoder).
    ``experts_implementation``: transformers' MoE expert kernel, 'grouped_mm' (default), 'batched_mm'
    or 'eager' (per-expert loop).

    Module paths: ``model.sam_model``, ``model.vision_model`` (``embeddings``, ``pre_layrnorm``,
    ``transformer.layers[i]``), ``model.projector.layers``, ``model.image_newline``,
    ``model.view_seperator``, ``model.language`` (``embed_tokens``, ``layers[i]`` with ``self_attn``,
    ``mlp`` = dense MLP in layer 0 else MoE with ``gate``/``experts``/``shared_experts``,
    ``input_layernorm``, ``post_attention_layernorm``; ``norm``), ``lm_head``.
    """
    config = config or DeepseekOCRConfig.default()
    model = instantiate_on_meta(config, dtype, attn_implementation, experts_implementation)
    if torch.device(device).type == "meta":
        return model
    model.to_empty(device=device)
    init_random_(model, seed)
    reset_buffers(model)
    return model


def parameter_summary(model: DeepseekOCRForCausalLM) -> dict[str, int]:
    """Parameter counts per top module, in order: sam, clip, projector, layout (newline + separator),
    embedding, decoder.layers.<i>, decoder.norm, lm_head, total. The parts add up to ``total``."""
    m = model.model
    lang = m.language

    def count(mod: nn.Module) -> int:
        return sum(p.numel() for p in mod.parameters())

    out: dict[str, int] = {
        "sam": count(m.sam_model),
        "clip": count(m.vision_model),
        "projector": count(m.projector),
        "layout": m.image_newline.numel() + m.view_seperator.numel(),
        "embedding": count(lang.embed_tokens),
    }
    for i, layer in enumerate(lang.layers):
        out[f"decoder.layers.{i}"] = count(layer)
    out["decoder.norm"] = count(lang.norm)
    out["lm_head"] = count(model.lm_head)
    out["total"] = count(model)
    if sum(v for k, v in out.items() if k != "total") != out["total"]:
        raise RuntimeError("parameter summary parts do not add up to the total")
    return out
