"""Prompt token layout: BOS, the text before ``<image>``, the image slots, the text after.

With a local model folder the real tokenizer is used (transformers AutoTokenizer, offline). Without
one a *synthetic* layout of the same structure is built: the text is split into pieces by
:data:`SYNTHETIC_PIECE` (one piece per special token ``<|...|>``, word, punctuation mark or newline)
and each piece becomes one token id. This is an estimate of the real tokenizer's length (BPE may split
rare words further); the output always says which kind was used.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import define, field

from llm_perf_opt.errors import UserError
from llm_perf_opt.models.deepseek_ocr.modes import TokenLayout

if TYPE_CHECKING:  # torch loads where a batch is built: the analytic model counts tokens without it
    import torch

IMAGE_TAG = "<image>"
#: Built-in prompts of the reference implementation (FACTS.md, "Inference defaults").
PROMPTS: dict[str, str] = {
    "document": "<image>\n<|grounding|>Convert the document to markdown.",
    "free_ocr": "<image>\nFree OCR.",
    "ocr_image": "<image>\n<|grounding|>OCR this image.",
}
DEFAULT_PROMPT = PROMPTS["document"]
#: Token ids (FACTS.md).
BOS_ID, EOS_ID, PAD_ID, IMAGE_TOKEN_ID = 0, 1, 2, 128815
SPECIAL_IDS = {"<|ref|>": 128816, "<|/ref|>": 128817, "<|det|>": 128818, "<|/det|>": 128819,
               "<|grounding|>": 128820, "<td>": 128821, "</td>": 128822}
#: One synthetic token per special token, word, punctuation mark or newline.
SYNTHETIC_PIECE = re.compile(r"<\|[^|]*\|>|</?td>|\w+|[^\w\s]|\n")
#: Synthetic ids of ordinary pieces: SYNTHETIC_ID_BASE + crc32(piece) % SYNTHETIC_ID_RANGE (deterministic).
SYNTHETIC_ID_BASE, SYNTHETIC_ID_RANGE = 1000, 100_000


@define(kw_only=True, frozen=True, eq=False)
class PromptBatch:
    """Left-padded prompt batch."""

    input_ids: torch.Tensor = field(metadata={"help": "[B, L] int64 token ids (pad = 2 on the left)"})
    attention_mask: torch.Tensor = field(metadata={"help": "[B, L] int64, 1 = real token"})
    image_mask: torch.Tensor = field(metadata={"help": "[B, L] bool, True = <image> slot"})
    lengths: list[int] = field(metadata={"help": "unpadded prompt length per row (tokens)"})
    text_tokens: list[int] = field(metadata={"help": "text tokens per row (without BOS and slots)"})
    tokenizer_kind: str = field(metadata={"help": "'tokenizer' or 'synthetic'"})


def synthetic_encode(text: str) -> list[int]:
    """Deterministic stand-in tokenisation (see module docstring)."""
    ids = []
    for piece in SYNTHETIC_PIECE.findall(text):
        ids.append(SPECIAL_IDS.get(piece, SYNTHETIC_ID_BASE + zlib.crc32(piece.encode()) % SYNTHETIC_ID_RANGE))
    return ids


def synthetic_text_tokens(prompt_text: str) -> int:
    """Synthetic text-token count of a prompt (without BOS and image slots)."""
    return sum(len(synthetic_encode(part)) for part in prompt_text.split(IMAGE_TAG))


def resolve_prompt(text: str) -> str:
    """``--prompt`` value: a built-in prompt name or literal text with exactly one <image> tag ('\\n' = newline)."""
    if text in PROMPTS:
        return PROMPTS[text]
    literal = text.replace("\\n", "\n")
    if literal.count(IMAGE_TAG) != 1:
        raise UserError(f"--prompt {text!r}: not a built-in prompt ({', '.join(PROMPTS)}) and not text with "
                        f"exactly one {IMAGE_TAG} tag")
    return literal


def load_tokenizer(model_dir: str | Path) -> Any:
    """The model folder's tokenizer via AutoTokenizer, offline; UserError when it has none."""
    from transformers import AutoTokenizer

    path = Path(model_dir)
    if not path.is_dir():
        raise UserError(f"{path}: model folder not found (for its tokenizer)")
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        detail = " ".join(str(exc).split())[:300]  # transformers' messages span lines: keep one
        raise UserError(f"{path}: no usable tokenizer ({type(exc).__name__}: {detail})") from exc


def build_prompt(layouts: Sequence[TokenLayout], prompt_text: str = DEFAULT_PROMPT,
                 tokenizer: Any = None) -> PromptBatch:
    """One row per layout: BOS + text with ``<image>`` expanded to the layout's prompt slots.

    ``tokenizer``: None (synthetic), a tokenizer object with ``encode``, or a model-folder path.
    """
    import torch

    if prompt_text.count(IMAGE_TAG) != 1:
        raise UserError(f"prompt must contain exactly one {IMAGE_TAG} tag: {prompt_text!r}")
    if not layouts:
        raise UserError("build_prompt needs at least one image layout")
    if isinstance(tokenizer, str | Path):
        tokenizer = load_tokenizer(tokenizer)
    before, after = prompt_text.split(IMAGE_TAG)
    if tokenizer is None:
        kind = "synthetic"
        pre, post = synthetic_encode(before), synthetic_encode(after)
    else:
        kind = "tokenizer"
        pre = list(tokenizer.encode(before, add_special_tokens=False)) if before else []
        post = list(tokenizer.encode(after, add_special_tokens=False)) if after else []
    rows = [[BOS_ID, *pre, *([IMAGE_TOKEN_ID] * lay.prompt_slots), *post] for lay in layouts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    img = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, (row, lay) in enumerate(zip(rows, layouts, strict=True)):
        start = width - len(row)
        ids[b, start:] = torch.tensor(row)
        mask[b, start:] = 1
        first_slot = start + 1 + len(pre)
        img[b, first_slot:first_slot + lay.prompt_slots] = True
    return PromptBatch(input_ids=ids, attention_mask=mask, image_mask=img, lengths=[len(r) for r in rows],
                       text_tokens=[len(pre) + len(post)] * len(rows), tokenizer_kind=kind)
