"""Image preprocessing per resolution mode (FACTS.md, "Resolution modes and image tokens").

- No-crop modes (Tiny/Small/Base/Large): a view of ``image_size``; sides <= 640 are resized to the
  square (aspect ratio distorted), larger ones are letter-boxed (aspect kept, centred, padded with
  (127, 127, 127)).
- Gundam: pages with both sides <= 640 are not tiled; otherwise ``modes.choose_tile_grid`` picks
  rows x cols, the page is resized to (640*cols, 640*rows) and cut into 640x640 tiles, row-major.
  The global view is the page letter-boxed to ``base_size`` (1024).
- Pixels are scaled to [0, 1] and normalised with mean = std = 0.5 (so to [-1, 1]).
"""

from __future__ import annotations

from pathlib import Path

import torch
from attrs import define, field
from PIL import Image, ImageOps, UnidentifiedImageError

from llm_perf_opt.errors import UserError
from llm_perf_opt.models.deepseek_ocr.modes import (
    ResolutionMode,
    TokenLayout,
    get_mode,
    token_layout,
    valid_tokens,
)

#: Normalisation mean and std per channel (FACTS.md: "Normalise with mean = std = 0.5").
NORM_MEAN = 0.5
NORM_STD = 0.5
#: Padding colour: int(mean * 255) per channel (FACTS.md).
PAD_COLOR = (127, 127, 127)
#: No-crop views at or below this side are resized, larger ones padded (FACTS.md).
RESIZE_MAX_SIDE = 640


class ImageError(UserError):
    """A missing, unreadable or corrupt image file."""


@define(kw_only=True, frozen=True, eq=False)
class PreprocessedImage:
    """One page ready for the vision encoders."""

    global_view: torch.Tensor = field(metadata={"help": "[3, B, B] float32, normalised; B = global view side"})
    tiles: torch.Tensor = field(metadata={"help": "[n, 3, T, T] float32 local tiles (n = 0 when not tiled)"})
    layout: TokenLayout = field(metadata={"help": "token layout (grid sides, tiles, prompt slots)"})
    width: int = field(metadata={"help": "original page width (px)"})
    height: int = field(metadata={"help": "original page height (px)"})
    valid_tokens: int = field(metadata={"help": "vision tokens not covering padding (paper Eq. 1)"})
    source: str = field(default="<PIL image>", metadata={"help": "file path or '<PIL image>'"})


def load_image(image: Image.Image | str | Path) -> tuple[Image.Image, str]:
    """RGB image (EXIF orientation applied) and its source name; ImageError names a bad file."""
    if isinstance(image, Image.Image):
        return ImageOps.exif_transpose(image).convert("RGB"), "<PIL image>"
    path = Path(image)
    if not path.is_file():
        raise ImageError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im).convert("RGB"), str(path)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> [3, H, W] float32 normalised with mean = std = 0.5."""
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    t = data.reshape(image.height, image.width, 3).permute(2, 0, 1).to(torch.float32).div_(255.0)
    return t.sub_(NORM_MEAN).div_(NORM_STD)


def letterbox(image: Image.Image, side: int) -> Image.Image:
    """Aspect-preserving resize into side x side, centred on PAD_COLOR (PIL ImageOps.pad, bicubic)."""
    return ImageOps.pad(image, (side, side), method=Image.Resampling.BICUBIC, color=PAD_COLOR)


def page_valid_tokens(layout: TokenLayout, width: int, height: int, mode: ResolutionMode) -> int:
    """Vision tokens that do not cover padding.

    Letter-boxed views (Base/Large, Gundam's global view) follow the paper's Eq. 1; resized views
    (Tiny/Small, Gundam tiles) have no padding, so all their tokens are valid.
    """
    if mode.crop_mode:
        return layout.local_tokens + valid_tokens(layout.global_tokens, width, height)
    if mode.image_size <= RESIZE_MAX_SIDE:
        return layout.nominal_tokens
    return valid_tokens(layout.nominal_tokens, width, height)


def preprocess_image(image: Image.Image | str | Path, mode: str | ResolutionMode) -> PreprocessedImage:
    """Pixel tensors and token layout of one page in ``mode`` (see module docstring)."""
    m = get_mode(mode) if isinstance(mode, str) else mode
    img, source = load_image(image)
    width, height = img.size
    layout = token_layout(m, width, height)
    if m.crop_mode:
        global_img = letterbox(img, m.base_size)
        if layout.num_tiles:
            tile = m.image_size
            resized = img.resize((tile * layout.cols, tile * layout.rows), Image.Resampling.BICUBIC)
            tiles = [to_tensor(resized.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)))
                     for r in range(layout.rows) for c in range(layout.cols)]
            tile_tensor = torch.stack(tiles)
        else:
            tile_tensor = torch.zeros(0, 3, m.image_size, m.image_size)
    else:
        side = m.image_size
        if side <= RESIZE_MAX_SIDE:
            global_img = img.resize((side, side), Image.Resampling.BICUBIC)
        else:
            global_img = letterbox(img, side)
        tile_tensor = torch.zeros(0, 3, side, side)
    return PreprocessedImage(
        global_view=to_tensor(global_img), tiles=tile_tensor, layout=layout, width=width, height=height,
        valid_tokens=page_valid_tokens(layout, width, height, m), source=source,
    )
