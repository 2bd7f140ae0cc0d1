"""Synthetic document pages drawn locally with PIL (no data download needed).

Three categories, cycled in the order given:

- ``text_heavy``: a title and dense single-column body text (a journal page);
- ``mixed_layout``: headings, two text columns, a ruled table and a bar chart;
- ``image_rich``: large photo-like areas (gradients and noise), figures and captions.

Pages have real paper sizes (ISO A4 210 x 297 mm, US Letter 8.5 x 11 in) at
a chosen dpi (150 by default), alternating A4 and Letter. Everything is
drawn from ``random.Random(seed * 1_000_003 + index)``, so the same seed gives
the same pixels on every machine with the same Pillow version.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from PIL import Image, ImageDraw, ImageFont

from llm_perf_opt.data.common import ImageSource
from llm_perf_opt.errors import UserError
from llm_perf_opt.inputs.pages import Page

#: The synthetic page categories, in default order.
CATEGORIES: tuple[str, ...] = ("text_heavy", "mixed_layout", "image_rich")

#: Paper sizes in inches (ISO 216: A4 = 210 x 297 mm; ANSI: Letter = 8.5 x 11 in).
PAPER_INCHES: dict[str, tuple[float, float]] = {
    "A4": (210 / 25.4, 297 / 25.4),
    "Letter": (8.5, 11.0),
}

FontT = ImageFont.FreeTypeFont | ImageFont.ImageFont


def parse_categories(names: Sequence[str] | None) -> tuple[str, ...]:
    """Validate category names (comma-separated items allowed); UserError lists the known ones."""
    if not names:
        return CATEGORIES
    out: list[str] = []
    for item in names:
        for part in item.split(","):
            key = part.strip().lower()
            if not key:
                continue
            if key not in CATEGORIES:
                raise UserError(f"unknown synthetic category {part.strip()!r}; known: {', '.join(CATEGORIES)}")
            out.append(key)
    if not out:
        raise UserError("--synthetic-categories names no category")
    return tuple(out)


def page_size_px(paper: str, dpi: int) -> tuple[int, int]:
    """(width, height) in pixels of ``paper`` at ``dpi``."""
    w_in, h_in = PAPER_INCHES[paper]
    return round(w_in * dpi), round(h_in * dpi)


def synthetic_pages(count: int, *, categories: Sequence[str] = CATEGORIES, seed: int = 0,
                    dpi: int = 150) -> list[Page]:
    """``count`` synthetic pages cycling through ``categories`` and A4/Letter sizes.

    Pages are drawn when loaded (each load redraws the same pixels).
    """
    if count <= 0:
        raise UserError(f"--synthetic {count}: must be >= 1")
    if dpi < 36 or dpi > 600:
        raise UserError(f"synthetic page dpi {dpi}: must be between 36 and 600")
    cats = parse_categories(list(categories))
    papers = list(PAPER_INCHES)
    pages: list[Page] = []
    for index in range(count):
        category = cats[index % len(cats)]
        paper = papers[(index // len(cats)) % len(papers)]
        width, height = page_size_px(paper, dpi)
        pages.append(Page(
            name=f"synthetic-{index:03d}-{category}",
            source=f"synthetic:{category}:{paper}@{dpi}dpi:seed={seed}:index={index}",
            width=width, height=height, category=category, kind=ImageSource.SYNTHETIC,
            loader=_drawer(category, width, height, seed * 1_000_003 + index, dpi),
        ))
    return pages


def _drawer(category: str, width: int, height: int, rng_seed: int, dpi: int) -> Callable[[], Image.Image]:
    def draw() -> Image.Image:
        return draw_page(category, width, height, rng_seed, dpi)

    return draw


def _font(size_px: int) -> FontT:
    return ImageFont.load_default(size=max(6, size_px))


_SYLLABLES = ("ta", "ro", "mi", "ne", "ka", "lu", "se", "do", "vi", "pa", "en", "or", "is", "al", "th", "qu")


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4)))


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(_word(rng) for _ in range(words))
    return text[:1].upper() + text[1:] + "."


def _text_block(draw: ImageDraw.ImageDraw, rng: random.Random, box: tuple[int, int, int, int],
                font: FontT, line_h: int) -> int:
    """Fill ``box`` (x0, y0, x1, y1) with justified-looking lines; returns the y after the last line."""
    x0, y0, x1, y1 = box
    y = y0
    while y + line_h <= y1:
        line = ""
        while True:
            candidate = (line + " " + _word(rng)).strip()
            if draw.textlength(candidate, font=font) > (x1 - x0):
                break
            line = candidate
        if rng.random() < 0.08:  # paragraph end: short line, then a gap
            line = " ".join(line.split()[: max(1, len(line.split()) // 2)]) + "."
            draw.text((x0, y), line, fill=(20, 20, 20), font=font)
            y += int(line_h * 1.6)
            continue
        draw.text((x0, y), line, fill=(20, 20, 20), font=font)
        y += line_h
    return y


def _photo(img: Image.Image, rng: random.Random, box: tuple[int, int, int, int]) -> None:
    """A photo-like area: a two-colour gradient with blobs and pixel noise."""
    x0, y0, x1, y1 = box
    w, h = max(1, x1 - x0), max(1, y1 - y0)
    c0 = tuple(rng.randint(0, 255) for _ in range(3))
    c1 = tuple(rng.randint(0, 255) for _ in range(3))
    grad = Image.linear_gradient("L").resize((w, h))
    area = Image.composite(Image.new("RGB", (w, h), c1), Image.new("RGB", (w, h), c0), grad)
    d = ImageDraw.Draw(area)
    for _ in range(rng.randint(4, 12)):
        cx, cy, r = rng.randint(0, w), rng.randint(0, h), rng.randint(max(2, w // 20), max(3, w // 4))
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(rng.randint(0, 255) for _ in range(3)))
    noise = Image.effect_noise((w, h), 24).convert("RGB")
    area = Image.blend(area, noise, 0.15)
    img.paste(area, (x0, y0))


def _table(draw: ImageDraw.ImageDraw, rng: random.Random, box: tuple[int, int, int, int], font: FontT) -> None:
    x0, y0, x1, y1 = box
    rows, cols = rng.randint(4, 8), rng.randint(3, 5)
    rh, cw = (y1 - y0) / rows, (x1 - x0) / cols
    for r in range(rows + 1):
        draw.line((x0, y0 + r * rh, x1, y0 + r * rh), fill=(0, 0, 0), width=1 if r else 2)
    for c in range(cols + 1):
        draw.line((x0 + c * cw, y0, x0 + c * cw, y1), fill=(0, 0, 0), width=1)
    for r in range(rows):
        for c in range(cols):
            cell = _word(rng) if r == 0 else f"{rng.uniform(0, 1000):.1f}"
            draw.text((x0 + c * cw + 4, y0 + r * rh + 3), cell, fill=(0, 0, 0), font=font)


def _bar_chart(draw: ImageDraw.ImageDraw, rng: random.Random, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    draw.line((x0, y1, x1, y1), fill=(0, 0, 0), width=2)
    draw.line((x0, y0, x0, y1), fill=(0, 0, 0), width=2)
    bars = rng.randint(4, 9)
    bw = (x1 - x0) / (bars * 1.5 + 0.5)
    for i in range(bars):
        bx = x0 + bw * (0.5 + 1.5 * i)
        top = y1 - rng.uniform(0.1, 0.95) * (y1 - y0)
        draw.rectangle((bx, top, bx + bw, y1), fill=(rng.randint(30, 200), rng.randint(30, 200), 200))


def draw_page(category: str, width: int, height: int, rng_seed: int, dpi: int) -> Image.Image:
    """Draw one page of ``category`` (width x height px, ``dpi`` sets the font size)."""
    rng = random.Random(rng_seed)
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    margin = int(0.75 * dpi)  # 3/4 inch margins
    body_px = max(8, round(10 / 72 * dpi))  # 10 pt body text
    body, title = _font(body_px), _font(body_px * 2)
    small = _font(max(6, round(body_px * 0.8)))
    line_h = int(body_px * 1.35)
    x0, x1 = margin, width - margin
    y = margin
    draw.text((x0, y), _sentence(rng, rng.randint(3, 7)).rstrip("."), fill=(0, 0, 0), font=title)
    y += body_px * 3
    if category == "text_heavy":
        _text_block(draw, rng, (x0, y, x1, height - margin), body, line_h)
    elif category == "mixed_layout":
        gap = int(0.25 * dpi)
        mid = (x0 + x1) // 2
        col_bottom = y + (height - 2 * margin) // 2
        _text_block(draw, rng, (x0, y, mid - gap // 2, col_bottom), body, line_h)
        _text_block(draw, rng, (mid + gap // 2, y, x1, col_bottom), body, line_h)
        y = col_bottom + gap
        draw.text((x0, y), _sentence(rng, 4), fill=(0, 0, 0), font=title)
        y += body_px * 3
        table_bottom = y + (height - margin - y) // 2
        _table(draw, rng, (x0, y, mid - gap // 2, table_bottom), small)
        _bar_chart(draw, rng, (mid + gap, y, x1, table_bottom))
        _text_block(draw, rng, (x0, table_bottom + gap, x1, height - margin), body, line_h)
    elif category == "image_rich":
        while y < height - margin - 4 * line_h:
            if rng.random() < 0.6:
                ph = rng.randint(int(0.15 * height), int(0.3 * height))
                ph = min(ph, height - margin - y - 2 * line_h)
                if ph < line_h * 4:
                    break
                split = rng.random() < 0.5
                right = (x0 + x1) // 2 if split else x1
                _photo(img, rng, (x0, y, right, y + ph))
                if split:
                    _text_block(draw, rng, (right + int(0.2 * dpi), y, x1, y + ph), body, line_h)
                y += ph + line_h // 2
                draw.text((x0, y), "Figure " + str(rng.randint(1, 40)) + ": " + _sentence(rng, 8),
                          fill=(60, 60, 60), font=small)
                y += line_h * 2
            else:
                y = _text_block(draw, rng, (x0, y, x1, min(height - margin, y + 5 * line_h)), body, line_h)
                y += line_h
    else:
        raise UserError(f"unknown synthetic category {category!r}; known: {', '.join(CATEGORIES)}")
    return img
