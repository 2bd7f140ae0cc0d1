"""Named OCR workload profiles and the derived per-request shapes.

A workload (``OCRWorkloadProfile`` of :mod:`llm_perf_opt.data.analytic`) is a
choice, not a fact: the numbers below define the profiles, they are not
measurements. ``prompt_text_tokens`` counts BOS plus the text of the prompt
around ``<image>`` (so prefill length = image slots + prompt_text_tokens, the
data model's ``prefill_tokens``).

Profiles:

- ``dsocr-standard-v1``: the reference implementation's document setting --
  Gundam mode (its default crop mode) on a US-letter page scanned at 200 dpi
  (1700 x 2200 px -> 3 x 2 tiles of 640 + the 1024 global view, 903 image
  slots), the document prompt (BOS + 8 text tokens), 1024 new tokens
  (a dense page of markdown; the published ~2,500 tokens/s at ~2.3 pages/s
  on an A100, FACTS.md, is ~1,000 tokens per page), batch 1, bf16, SDPA.
- ``dsocr-<mode>-v1`` for tiny, small, base, large, gundam: the same page,
  prompt, output and dtype in that resolution mode.
"""

from __future__ import annotations

from attrs import define, field

from llm_perf_opt.data.analytic import OCRWorkloadProfile
from llm_perf_opt.data.common import AttentionKind
from llm_perf_opt.errors import UserError
from llm_perf_opt.models.deepseek_ocr.modes import MODES, TokenLayout
from llm_perf_opt.models.deepseek_ocr.prompt import DEFAULT_PROMPT, synthetic_text_tokens
from llm_perf_opt.vocab import DType, ExpertsImplementation

#: US letter (8.5 x 11 in) at 200 dpi, pixels.
LETTER_200DPI_PX = (1700, 2200)
#: BOS + the synthetic token count of the document prompt's text (prompt.synthetic_text_tokens).
DOCUMENT_PROMPT_TOKENS = 1 + synthetic_text_tokens(DEFAULT_PROMPT)
#: Generated tokens of the standard profiles (see module docstring).
STANDARD_NEW_TOKENS = 1024
DEFAULT_PROFILE_ID = "dsocr-standard-v1"


class WorkloadError(UserError):
    """Unknown workload profile or a workload parameter out of range."""


def _profile(profile_id: str, mode: str) -> OCRWorkloadProfile:
    w, h = LETTER_200DPI_PX
    return OCRWorkloadProfile.create(profile_id=profile_id, mode=mode, image_width_px=w, image_height_px=h,
                                     prompt_text_tokens=DOCUMENT_PROMPT_TOKENS, max_new_tokens=STANDARD_NEW_TOKENS,
                                     batch_size=1, dtype=DType.BF16, attention=AttentionKind.SDPA)


def named_profiles() -> dict[str, OCRWorkloadProfile]:
    """All named profiles by id."""
    out = {DEFAULT_PROFILE_ID: _profile(DEFAULT_PROFILE_ID, "gundam")}
    for mode in MODES:
        pid = f"dsocr-{mode}-v1"
        out[pid] = _profile(pid, mode)
    return out


def get_profile(profile_id: str) -> OCRWorkloadProfile:
    """Named profile; WorkloadError lists the known ids."""
    profiles = named_profiles()
    if profile_id not in profiles:
        raise WorkloadError(f"unknown workload profile {profile_id!r}; known: {', '.join(profiles)}")
    return profiles[profile_id]


def with_overrides(base: OCRWorkloadProfile, *, profile_id: str | None = None, mode: str | None = None,
                   image_size: tuple[int, int] | None = None, prompt_text_tokens: int | None = None,
                   max_new_tokens: int | None = None, batch_size: int | None = None,
                   dtype: DType | str | None = None, attention: AttentionKind | str | None = None,
                   experts: ExpertsImplementation | None = None,
                   no_repeat_ngram_size: int | None = None) -> OCRWorkloadProfile:
    """A copy of ``base`` with the given fields changed (tile grid re-derived); WorkloadError on bad values."""
    from llm_perf_opt.data.validators import FieldValueError
    from llm_perf_opt.models.deepseek_ocr.modes import get_mode

    w, h = image_size if image_size is not None else (base.image_width_px, base.image_height_px)
    new_mode = get_mode(mode).name if mode is not None else base.mode
    for name, value, low in (("prompt_text_tokens", prompt_text_tokens, 1), ("max_new_tokens", max_new_tokens, 1),
                             ("batch_size", batch_size, 1), ("no_repeat_ngram_size", no_repeat_ngram_size, 0)):
        if value is not None and value < low:
            raise WorkloadError(f"{name} must be >= {low}{' (BOS included)' if name == 'prompt_text_tokens' else ''}, "
                                f"got {value}")
    changed = any(v is not None for v in (mode, image_size, prompt_text_tokens, max_new_tokens, batch_size, dtype,
                                          attention, experts, no_repeat_ngram_size))
    pid = profile_id or (f"{base.profile_id}-custom" if changed else base.profile_id)
    try:
        return OCRWorkloadProfile.create(
            profile_id=pid, mode=new_mode, image_width_px=w, image_height_px=h,
            prompt_text_tokens=base.prompt_text_tokens if prompt_text_tokens is None else prompt_text_tokens,
            max_new_tokens=base.max_new_tokens if max_new_tokens is None else max_new_tokens,
            batch_size=base.batch_size if batch_size is None else batch_size,
            dtype=base.dtype if dtype is None else DType(dtype),
            attention=base.attention if attention is None else AttentionKind(attention),
            experts=base.experts if experts is None else experts,
            no_repeat_ngram_size=(base.no_repeat_ngram_size if no_repeat_ngram_size is None
                                  else no_repeat_ngram_size))
    except FieldValueError as exc:
        raise WorkloadError(f"workload: {exc}") from None
    except ValueError as exc:
        raise WorkloadError(f"workload: {exc}") from None


@define(kw_only=True, frozen=True)
class RequestShape:
    """Shapes the analytic layers need, derived from a workload and the model config.

    ``decode_forwards`` = max_new_tokens - 1: the first new token comes from the
    prefill logits, each later one from one decoder forward (as in
    models.deepseek_ocr.generation.generate); decode step i attends over
    ``prefill_tokens + i + 1`` positions.
    """

    layout: TokenLayout = field(metadata={"help": "image-token layout of the page"})
    batch: int = field(metadata={"help": "pages per forward"})
    prefill_tokens: int = field(metadata={"help": "prompt length per page (slots + text incl. BOS)"})
    new_tokens: int = field(metadata={"help": "generated tokens per page"})
    global_side_px: int = field(metadata={"help": "global view side in pixels"})
    tile_side_px: int = field(metadata={"help": "tile side in pixels (0 when not tiled)"})

    @property
    def decode_forwards(self) -> int:
        """Decoder forwards after prefill: new_tokens - 1."""
        return max(self.new_tokens - 1, 0)

    def decode_kv_len(self, step: int) -> int:
        """Positions attended in decode step ``step`` (0-based): prefill_tokens + step + 1."""
        return self.prefill_tokens + step + 1

    @property
    def final_kv_len(self) -> int:
        """Positions in the cache after the last forward."""
        return self.prefill_tokens + self.decode_forwards


def request_shape(workload: OCRWorkloadProfile, max_positions: int | None = None) -> RequestShape:
    """RequestShape of ``workload``; WorkloadError when the sequence exceeds ``max_positions``."""
    mode = MODES[workload.mode]
    layout = workload.layout
    shape = RequestShape(layout=layout, batch=workload.batch_size, prefill_tokens=workload.prefill_tokens,
                         new_tokens=workload.max_new_tokens,
                         global_side_px=mode.base_size if mode.crop_mode else mode.image_size,
                         tile_side_px=mode.image_size if layout.num_tiles else 0)
    if max_positions is not None and shape.final_kv_len + 1 > max_positions:
        raise WorkloadError(f"prompt ({shape.prefill_tokens}) + max_new_tokens ({shape.new_tokens}) exceeds the "
                            f"model's {max_positions} positions")
    return shape
