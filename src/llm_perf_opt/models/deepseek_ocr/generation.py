"""Prefill, greedy decode steps with a KV cache, and the generation loop.

``prefill`` and ``decode_step`` are separate so the profiler can time and range each call. Both take
an optional ``scope(name) -> context manager``: prefill opens ``Stage.PREFILL`` around itself and,
inside, the vision stages (``vision.sam``, ``vision.clip``, ``projector``); each decode step opens
``DECODE_STEP_RANGE.format(step=i)``. A caller that passes ``scope`` therefore needs no ranges of its
own around these calls.

Token choice is greedy after a no-repeat-n-gram ban over the row's whole history (prompt + generated,
as transformers' NoRepeatNGramLogitsProcessor does). Rows are left-padded; position ids count only real
tokens, so a row's result does not depend on the other rows of the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from attrs import define, field
from transformers.cache_utils import DynamicCache

from llm_perf_opt.errors import UserError
from llm_perf_opt.models.deepseek_ocr.modeling import DeepseekOCRForCausalLM, Scope, null_scope
from llm_perf_opt.models.deepseek_ocr.preprocess import PreprocessedImage
from llm_perf_opt.models.deepseek_ocr.prompt import PAD_ID, PromptBatch
from llm_perf_opt.vocab import DECODE_STEP_RANGE, DEFAULT_NO_REPEAT_NGRAM, Stage


@define(kw_only=True, eq=False)
class DecodeState:
    """Everything a decode step needs; returned by prefill and by each decode step."""

    logits: torch.Tensor = field(metadata={"help": "[B, V] float32 logits for the next token"})
    past_key_values: Any = field(metadata={"help": "transformers DynamicCache; per layer K/V [B, kv_heads, T, head_dim]"})
    attention_mask: torch.Tensor = field(metadata={"help": "[B, T] int64 over cached + next positions"})
    positions: torch.Tensor = field(metadata={"help": "[B] int64 position id of the next token per row"})
    history: torch.Tensor = field(metadata={"help": "[B, T] int64 prompt ids (left-padded) + generated ids"})
    row_start: list[int] = field(metadata={"help": "first real (non-pad) column of ``history`` per row"})
    tokens: torch.Tensor = field(metadata={"help": "[B, n] int64 generated ids so far (pad after EOS)"})
    finished: torch.Tensor = field(metadata={"help": "[B] bool, row has emitted EOS"})
    num_new_tokens: torch.Tensor = field(metadata={"help": "[B] int64 tokens emitted per row (EOS included)"})
    prompt_length: int = field(metadata={"help": "padded prompt length L (tokens)"})
    step: int = field(default=0, metadata={"help": "decode steps done"})


#: Prefill results are a DecodeState before the first step.
PrefillState = DecodeState


@define(kw_only=True, eq=False)
class GenerationResult:
    """Output of :func:`generate`."""

    tokens: torch.Tensor = field(metadata={"help": "[B, N] int64 generated ids (pad after a row's EOS)"})
    num_new_tokens: list[int] = field(metadata={"help": "tokens emitted per row (EOS included)"})
    decode_steps: int = field(metadata={"help": "decode steps run (= N)"})
    prefill_fn: Callable[..., DecodeState] = field(metadata={"help": "prefill callable used"})
    decode_fn: Callable[..., DecodeState] = field(metadata={"help": "decode-step callable used"})


def model_device(model: DeepseekOCRForCausalLM) -> torch.device:
    return model.lm_head.weight.device


def kv_cache_shapes(cache: Any) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(key shape, value shape) per decoder layer: each [B, kv_heads, T, head_dim]."""
    return [(tuple(layer.keys.shape), tuple(layer.values.shape)) for layer in cache.layers]


@torch.inference_mode()
def prefill(model: DeepseekOCRForCausalLM, prompt_batch: PromptBatch, images: Sequence[PreprocessedImage],
            *, scope: Scope | None = None) -> DecodeState:
    """Vision encoders + one decoder pass over the whole prompt; fills the KV cache.

    ``images[b]`` fills the ``<image>`` slots of prompt row b. Returns the state whose ``logits`` [B, V]
    give the first new token.
    """
    scope = scope or null_scope
    batch = prompt_batch.input_ids.shape[0]
    if len(images) != batch:
        raise UserError(f"{len(images)} images for {batch} prompt rows")
    limit = model.config.language.max_position_embeddings
    if prompt_batch.input_ids.shape[1] > limit:
        raise UserError(f"prompt of {prompt_batch.input_ids.shape[1]} tokens exceeds {limit} positions")
    device = model_device(model)
    with scope(Stage.PREFILL.value):
        image_embeds = model.embed_images(images, scope)
        input_ids = prompt_batch.input_ids.to(device)
        mask = prompt_batch.attention_mask.to(device)
        embeds = model.merge_embeddings(input_ids, prompt_batch.image_mask, image_embeds)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=model.model.language.config)
        logits, cache = model(None, attention_mask=mask, position_ids=positions, past_key_values=cache,
                              inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
    return DecodeState(
        logits=logits[:, -1].float(), past_key_values=cache, attention_mask=mask,
        positions=mask.sum(-1), history=input_ids,
        row_start=[int(x) for x in (1 - prompt_batch.attention_mask).sum(-1)],
        tokens=torch.zeros(batch, 0, dtype=torch.long, device=device),
        finished=torch.zeros(batch, dtype=torch.bool, device=device),
        num_new_tokens=torch.zeros(batch, dtype=torch.long, device=device),
        prompt_length=int(input_ids.shape[1]),
    )


def ban_repeated_ngrams(logits: torch.Tensor, history: torch.Tensor, row_start: Sequence[int], n: int) -> None:
    """Set to -inf, in place, every token that would complete an n-gram already in the row's history.

    Pure tensor ops (no host sync): windows of the history whose first n-1 ids equal its last n-1 ids
    mark their last id as banned.
    """
    if n <= 0:
        return
    for b in range(history.shape[0]):
        h = history[b, row_start[b]:]
        if h.numel() < n:
            continue
        windows = h.unfold(0, n, 1)  # [W, n]
        prefix = h[h.numel() - (n - 1):]
        hits = (windows[:, :-1] == prefix).all(-1)
        banned = torch.zeros(logits.shape[-1], dtype=torch.int32, device=logits.device)
        banned.scatter_reduce_(0, windows[:, -1], hits.to(torch.int32), reduce="amax")
        logits[b].masked_fill_(banned.bool(), float("-inf"))


@torch.inference_mode()
def decode_step(model: DeepseekOCRForCausalLM, state: DecodeState, *, scope: Scope | None = None,
                no_repeat_ngram_size: int = DEFAULT_NO_REPEAT_NGRAM, eos_token_id: int | None = None,
                fixed_length: bool = False, forward: bool = True, pass_mask: bool = True) -> DecodeState:
    """Choose the next token per row from ``state.logits`` (greedy), append it, and unless ``forward`` is
    False (or every row has finished) run one decoder pass to get the following logits.

    ``fixed_length``: ignore EOS (profiling). Otherwise a row that emitted ``eos_token_id`` (default:
    the config's) is finished and gets pad tokens afterwards.

    ``pass_mask`` False gives the forward no attention mask: the same result when no row is left-padded
    (refused otherwise), and with SDPA attention a step that makes no host sync, so that a CUDA graph can
    capture it (scripts/gpu/graph_decode.py).
    """
    scope = scope or null_scope
    if state.logits.device.type == "meta":
        raise UserError("decode_step needs real weights: a meta-device model has no logits to choose from")
    eos = model.config.language.eos_token_id if eos_token_id is None else eos_token_id
    if not pass_mask and any(state.row_start):
        raise UserError("decode_step(pass_mask=False) needs rows without left padding: "
                        f"rows start at columns {state.row_start}")
    with scope(DECODE_STEP_RANGE.format(step=state.step)):
        logits = state.logits.clone()
        ban_repeated_ngrams(logits, state.history, state.row_start, no_repeat_ngram_size)
        nxt = logits.argmax(-1)
        if not fixed_length:
            nxt = torch.where(state.finished, torch.full_like(nxt, PAD_ID), nxt)
            state.num_new_tokens += (~state.finished).long()
            state.finished = state.finished | (nxt == eos)
        else:
            state.num_new_tokens += 1
        state.tokens = torch.cat([state.tokens, nxt[:, None]], dim=1)
        state.history = torch.cat([state.history, nxt[:, None]], dim=1)
        state.step += 1
        if forward and (fixed_length or not bool(state.finished.all())):
            state.attention_mask = torch.cat([state.attention_mask, torch.ones_like(nxt)[:, None]], dim=1)
            logits_out, state.past_key_values = model(
                nxt[:, None], attention_mask=state.attention_mask if pass_mask else None, position_ids=state.positions[:, None],
                past_key_values=state.past_key_values, use_cache=True, logits_to_keep=1)
            state.logits = logits_out[:, -1].float()
            state.positions = state.positions + 1
    return state


def generate(model: DeepseekOCRForCausalLM, prompt_batch: PromptBatch, images: Sequence[PreprocessedImage], *,
             max_new_tokens: int, fixed_length: bool = False,
             no_repeat_ngram_size: int = DEFAULT_NO_REPEAT_NGRAM, eos_token_id: int | None = None,
             scope: Scope | None = None, prefill_fn: Callable[..., DecodeState] = prefill,
             decode_fn: Callable[..., DecodeState] = decode_step) -> GenerationResult:
    """Prefill, then up to ``max_new_tokens`` greedy steps (exactly that many when ``fixed_length``).

    ``prefill_fn`` / ``decode_fn`` default to :func:`prefill` / :func:`decode_step`; a profiler may pass
    wrappers with the same signatures to time each call.
    """
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    limit = model.config.language.max_position_embeddings
    if prompt_batch.input_ids.shape[1] + max_new_tokens > limit:
        raise UserError(f"prompt ({prompt_batch.input_ids.shape[1]}) + max_new_tokens ({max_new_tokens}) "
                        f"exceeds {limit} positions")
    state = prefill_fn(model, prompt_batch, images, scope=scope)
    for i in range(max_new_tokens):
        state = decode_fn(model, state, scope=scope, no_repeat_ngram_size=no_repeat_ngram_size,
                          eos_token_id=eos_token_id, fixed_length=fixed_length, forward=i < max_new_tokens - 1)
        if not fixed_length and bool(state.finished.all()):
            break
    return GenerationResult(tokens=state.tokens, num_new_tokens=[int(x) for x in state.num_new_tokens],
                            decode_steps=state.step, prefill_fn=prefill_fn, decode_fn=decode_fn)
