"""Tiny DeepSeek-OCR end to end on CPU: image file -> preprocessing -> prefill -> greedy decode."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from llm_perf_opt.errors import UserError
from llm_perf_opt.models.deepseek_ocr import (
    DeepseekOCRConfig,
    build_model,
    build_prompt,
    decode_step,
    generate,
    kv_cache_shapes,
    prefill,
    preprocess_image,
)

TINY = DeepseekOCRConfig.tiny()


def page(path, size, seed):
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    g = torch.Generator().manual_seed(seed)
    for _ in range(40):
        x, y = (int(v) for v in torch.randint(0, min(size) - 20, (2,), generator=g))
        draw.rectangle((x, y, x + 15, y + 4), fill=(0, 0, 0))
    img.save(path)
    return path


@pytest.fixture(scope="module")
def model():
    return build_model(TINY, device="cpu", dtype=torch.float32, seed=0)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    d = tmp_path_factory.mktemp("pages")
    return [page(d / "a.png", (600, 800), 1), page(d / "b.png", (900, 500), 2)]


def run(model, paths, mode, n, **kw):
    images = [preprocess_image(p, mode) for p in paths]
    batch = build_prompt([im.layout for im in images])
    return generate(model, batch, images, max_new_tokens=n, **kw)


def test_end_to_end_fixed_length_and_deterministic(model, pages):
    a = run(model, pages[:1], "small", 6, fixed_length=True)
    assert a.tokens.shape == (1, 6) and a.num_new_tokens == [6] and a.decode_steps == 6
    b = run(build_model(TINY, device="cpu", dtype=torch.float32, seed=0), pages[:1], "small", 6, fixed_length=True)
    assert torch.equal(a.tokens, b.tokens)
    c = run(build_model(TINY, device="cpu", dtype=torch.float32, seed=1), pages[:1], "small", 6, fixed_length=True)
    assert not torch.equal(a.tokens, c.tokens)


def test_eos_stops_unless_fixed_length(model, pages):
    first = run(model, pages[:1], "small", 1, fixed_length=True).tokens[0, 0].item()
    stopped = run(model, pages[:1], "small", 5, eos_token_id=first)
    assert stopped.tokens.shape == (1, 1) and stopped.num_new_tokens == [1]
    forced = run(model, pages[:1], "small", 5, eos_token_id=first, fixed_length=True)
    assert forced.tokens.shape == (1, 5) and forced.tokens[0, 0] == first


def test_no_repeat_ngram_bans_repeats(model, pages):
    out = run(model, pages[:1], "tiny", 12, fixed_length=True, no_repeat_ngram_size=2)
    toks = out.tokens[0].tolist()
    pairs = list(zip(toks, toks[1:], strict=False))
    assert len(pairs) == len(set(pairs))


@pytest.mark.parametrize("mode", ["tiny", "small", "base", "gundam"])
def test_vision_output_shape_per_mode(model, pages, mode):
    img = preprocess_image(pages[0], mode)
    (emb,) = model.embed_images([img])
    assert emb.shape == (img.layout.prompt_slots, TINY.language.hidden_size)
    sam = model.encode_sam(img.global_view[None])
    q = img.global_view.shape[-1] // 64
    assert sam.shape == (1, TINY.sam.downsample_channels[-1], q, q)
    clip = model.encode_clip(sam)
    assert clip.shape == (1, q * q, TINY.clip.width)
    assert model.project(clip, sam).shape == (1, q * q, TINY.language.hidden_size)


def test_kv_cache_shapes_and_separate_steps(model, pages):
    images = [preprocess_image(p, "tiny") for p in pages]
    batch = build_prompt([im.layout for im in images])
    seen = []

    def scope(name):
        seen.append(name)
        import contextlib
        return contextlib.nullcontext()

    state = prefill(model, batch, images, scope=scope)
    length = batch.input_ids.shape[1]
    lang = TINY.language
    want = (2, lang.num_key_value_heads, length, lang.head_dim)
    assert kv_cache_shapes(state.past_key_values) == [(want, want)] * lang.num_hidden_layers
    assert state.logits.shape == (2, lang.vocab_size)
    state = decode_step(model, state, scope=scope, fixed_length=True)
    state = decode_step(model, state, scope=scope, fixed_length=True)
    want2 = (2, lang.num_key_value_heads, length + 2, lang.head_dim)
    assert kv_cache_shapes(state.past_key_values)[0] == (want2, want2)
    assert seen == ["prefill", "vision.sam", "vision.clip", "projector", "decode.step.0", "decode.step.1"]


def test_batch_of_two_equals_two_single_runs(model, pages):
    images = [preprocess_image(pages[0], "tiny"), preprocess_image(pages[1], "small")]  # 73 vs 111 slots
    both = build_prompt([im.layout for im in images])
    assert both.attention_mask[0].sum() < both.attention_mask.shape[1]  # row 0 is left-padded
    s2 = prefill(model, both, images)
    for b, img in enumerate(images):
        s1 = prefill(model, build_prompt([img.layout]), [img])
        torch.testing.assert_close(s2.logits[b], s1.logits[0], rtol=1e-4, atol=1e-4)
    g2 = generate(model, both, images, max_new_tokens=5, fixed_length=True)
    for b, img in enumerate(images):
        g1 = generate(model, build_prompt([img.layout]), [img], max_new_tokens=5, fixed_length=True)
        assert torch.equal(g2.tokens[b], g1.tokens[0])


@pytest.mark.parametrize("n", [1, 2, 3, 20])
def test_ngram_ban_matches_transformers_processor(n):
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

    from llm_perf_opt.models.deepseek_ocr.generation import ban_repeated_ngrams

    g = torch.Generator().manual_seed(n)
    history = torch.randint(0, 6, (3, 60), generator=g)
    history[1, :25] = 7  # a repeated run ...
    history[1, -19:] = 7  # ... whose (n-1)-gram ends the row
    logits = torch.randn(3, 10, generator=g)
    ours = logits.clone()
    ban_repeated_ngrams(ours, history, [0, 0, 0], n)
    theirs = NoRepeatNGramLogitsProcessor(n)(history, logits.clone())
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    assert torch.isinf(ours).any()


def test_full_size_prefill_on_meta_gives_shapes():
    from llm_perf_opt.errors import UserError

    model = build_model(device="meta")
    img = preprocess_image(Image.new("RGB", (1700, 2200)), "gundam")
    state = prefill(model, build_prompt([img.layout]), [img])
    lang = DeepseekOCRConfig.default().language
    length = state.prompt_length
    assert state.logits.shape == (1, lang.vocab_size)
    assert kv_cache_shapes(state.past_key_values)[-1][0] == (1, lang.num_key_value_heads, length, lang.head_dim)
    with pytest.raises(UserError, match="decode_step needs real weights"):
        decode_step(model, state)


def test_attention_and_expert_implementations_agree(pages):
    images = [preprocess_image(pages[0], "tiny"), preprocess_image(pages[1], "small")]
    batch = build_prompt([im.layout for im in images])
    ref = None
    for attn, experts in [("eager", "grouped_mm"), ("sdpa", "grouped_mm"), ("eager", "eager"), ("sdpa", "batched_mm")]:
        m = build_model(TINY, device="cpu", dtype=torch.float32, attn_implementation=attn,
                        experts_implementation=experts)
        logits = prefill(m, batch, images).logits
        if ref is None:
            ref = logits
        torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)



def test_a_step_without_the_mask_matches_when_no_row_is_padded(model, pages):
    images = [preprocess_image(p, "tiny") for p in pages]
    batch = build_prompt([im.layout for im in images])
    assert not (batch.attention_mask == 0).any()
    with_mask = decode_step(model, prefill(model, batch, images), fixed_length=True)
    without = decode_step(model, prefill(model, batch, images), fixed_length=True, pass_mask=False)
    assert torch.allclose(with_mask.logits, without.logits, atol=1e-5)
    assert torch.equal(with_mask.tokens, without.tokens)


def test_a_step_without_the_mask_is_refused_for_padded_rows(model, pages):
    images = [preprocess_image(p, "gundam") for p in pages]
    batch = build_prompt([im.layout for im in images])
    state = prefill(model, batch, images)
    assert any(state.row_start)
    with pytest.raises(UserError, match="without left padding"):
        decode_step(model, state, fixed_length=True, pass_mask=False)
