"""Preprocessing, token layout and prompt slots per mode (facts read from tests/data/FACTS.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from llm_perf_opt.models.deepseek_ocr import (
    PROMPTS,
    DeepseekOCRConfig,
    ImageError,
    ModeError,
    build_model,
    build_prompt,
    get_mode,
    preprocess_image,
    synthetic_text_tokens,
    token_layout,
)

FACTS = (Path(__file__).resolve().parents[1] / "data" / "FACTS.md").read_text()


def facts_slots() -> dict[str, int]:
    """Prompt slots of the no-crop modes from the FACTS.md table ('| Tiny | 512 | ... | 8*9+1 = 73 |')."""
    rows = re.findall(r"^\| (\w+) \| (\d+) \| (\d+) \| no \| \d+ \| [^|]*= (\d+) \|$", FACTS, re.M)
    return {name.lower(): int(slots) for name, _, _, slots in rows}


def test_no_crop_slot_counts_match_facts():
    slots = facts_slots()
    assert set(slots) == {"tiny", "small", "base", "large"}
    for mode, want in slots.items():
        img = preprocess_image(Image.new("RGB", (800, 600), (10, 20, 30)), mode)
        assert img.layout.prompt_slots == want
        side = get_mode(mode).image_size
        assert img.global_view.shape == (3, side, side) and img.tiles.shape[0] == 0


@pytest.mark.parametrize("size", [(1700, 2200), (2200, 1700), (1000, 3000), (3000, 700), (1300, 1300),
                                  (641, 200), (600, 640), (640, 640)])
def test_gundam_slots_follow_formula(size):
    rows, cols = token_layout("gundam", *size).rows, token_layout("gundam", *size).cols
    img = preprocess_image(Image.new("RGB", size, (200, 200, 200)), "gundam")
    tiled = max(size) > 640
    assert img.layout.num_tiles == (rows * cols if tiled else 0)
    want = 273 + (10 * rows) * (10 * cols + 1) if tiled else 273
    assert img.layout.prompt_slots == want
    assert img.global_view.shape == (3, 1024, 1024)
    assert img.tiles.shape == ((rows * cols if tiled else 0), 3, 640, 640)


def test_gundam_tiles_are_row_major_cuts_and_global_view_is_padded():
    page = Image.new("RGB", (1280, 1920), (255, 255, 255))
    page.paste((0, 0, 0), (640, 0, 1280, 640))  # top-right quarter-ish black
    img = preprocess_image(page, "gundam")
    assert (img.layout.rows, img.layout.cols) == (3, 2)
    assert img.tiles[1].mean() == pytest.approx(-1.0) and img.tiles[0].mean() == pytest.approx(1.0)
    pad = (127 / 255 - 0.5) / 0.5
    assert img.global_view[:, 512, 0].tolist() == pytest.approx([pad] * 3)  # left pad column
    assert img.global_view[:, 512, 512].tolist() == pytest.approx([1.0] * 3, abs=1e-6)
    assert img.valid_tokens < img.layout.nominal_tokens


def test_small_modes_resize_without_padding():
    img = preprocess_image(Image.new("RGB", (300, 900), (0, 0, 0)), "small")
    assert torch.all(img.global_view == -1.0)
    assert img.valid_tokens == img.layout.nominal_tokens


def test_newline_and_separator_positions():
    model = build_model(DeepseekOCRConfig.tiny(), device="cpu", dtype=torch.float32)
    with torch.no_grad():
        model.model.image_newline.fill_(7.0)
        model.model.view_seperator.fill_(-9.0)
    img = preprocess_image(Image.new("RGB", (1500, 700), (90, 90, 90)), "gundam")
    (emb,) = model.embed_images([img])
    lay = img.layout
    assert emb.shape[0] == lay.prompt_slots
    is_nl = (emb == 7.0).all(-1)
    is_sep = (emb == -9.0).all(-1)
    local_w, g = lay.tile_side * lay.cols + 1, lay.global_side
    want_nl = [r * local_w + local_w - 1 for r in range(lay.tile_side * lay.rows)]
    want_nl += [lay.local_slots + r * (g + 1) + g for r in range(g)]
    assert torch.nonzero(is_nl).flatten().tolist() == want_nl
    assert torch.nonzero(is_sep).flatten().tolist() == [lay.prompt_slots - 1]


def test_prompt_layout_and_padding():
    a, b = token_layout("tiny", 500, 500), token_layout("gundam", 1700, 2200)
    batch = build_prompt([a, b])
    text = synthetic_text_tokens(PROMPTS["document"])
    assert batch.tokenizer_kind == "synthetic" and batch.text_tokens == [text, text]
    assert batch.lengths == [1 + text + a.prompt_slots, 1 + text + b.prompt_slots]
    assert batch.image_mask.sum(1).tolist() == [a.prompt_slots, b.prompt_slots]
    assert batch.attention_mask[0].sum() == batch.lengths[0] and batch.attention_mask[0, 0] == 0
    first = int((batch.attention_mask[0] == 1).nonzero()[0])
    assert batch.input_ids[0, first] == 0 and batch.image_mask[0, first + 1]  # BOS, then <image> slots
    assert batch.input_ids[1, 0] == 0 and batch.input_ids[1, -1] != 128815
    assert batch.input_ids[0, batch.image_mask[0]].unique().tolist() == [128815]
    # '\n', '<|grounding|>', 'Convert', 'the', 'document', 'to', 'markdown', '.'
    assert text == 8 and synthetic_text_tokens(PROMPTS["free_ocr"]) == 4


def test_missing_and_corrupt_images_and_unknown_mode(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.png: image file not found"):
        preprocess_image(tmp_path / "nope.png", "base")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageError, match=r"bad\.png: not a readable image") as err:
        preprocess_image(bad, "base")
    assert "\n" not in str(err.value)
    with pytest.raises(ModeError, match="unknown resolution mode 'huge'; known modes: tiny, small, base"):
        preprocess_image(Image.new("RGB", (10, 10)), "huge")


def test_prompt_with_a_local_tokenizer_folder(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from llm_perf_opt.errors import UserError

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "Free": 5, "OCR": 6, ".": 7}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path / "m")
    layout = token_layout("tiny", 100, 100)
    batch = build_prompt([layout], PROMPTS["free_ocr"], tokenizer=tmp_path / "m")
    assert batch.tokenizer_kind == "tokenizer" and batch.text_tokens == [3]
    assert batch.input_ids[0].tolist() == [0] + [128815] * layout.prompt_slots + [5, 6, 7]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty: no usable tokenizer") as err:
        build_prompt([layout], tokenizer=tmp_path / "empty")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="exactly one <image>"):
        build_prompt([layout], "no image tag")
