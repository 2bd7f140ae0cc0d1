"""Resolution modes, Gundam tile-grid choice and image-token layout (pure arithmetic).

Facts (FACTS.md, "Resolution modes and image tokens"): a view of side S gives
an S/16 patch grid, compressed 4x per side by the two stride-2 convs, so a
q x q token grid with q = S / 64. Each grid row is closed by one newline
token; the views are followed by one separator. Gundam cuts the page into
640x640 tiles (2 <= rows*cols <= 9) beside a 1024 global view.
"""

from __future__ import annotations

import math

from attrs import define, field

from llm_perf_opt.errors import UserError

#: Pixels per output token side: patch 16 x two stride-2 convs (FACTS.md).
PIXELS_PER_TOKEN_SIDE = 64
#: Tile-count bounds of Gundam's dynamic tiling (FACTS.md).
MIN_TILES = 2
MAX_TILES = 9


class ModeError(UserError):
    """Unknown resolution mode or impossible image size."""


@define(kw_only=True, frozen=True)
class ResolutionMode:
    """One resolution mode of DeepSeek-OCR (FACTS.md table)."""

    name: str = field(metadata={"help": "mode name: tiny, small, base, large, gundam"})
    base_size: int = field(metadata={"help": "global view side in pixels"})
    image_size: int = field(metadata={"help": "tile side in pixels (crop mode) or view side"})
    crop_mode: bool = field(metadata={"help": "dynamic tiling on (Gundam)"})


MODES: dict[str, ResolutionMode] = {
    "tiny": ResolutionMode(name="tiny", base_size=512, image_size=512, crop_mode=False),
    "small": ResolutionMode(name="small", base_size=640, image_size=640, crop_mode=False),
    "base": ResolutionMode(name="base", base_size=1024, image_size=1024, crop_mode=False),
    "large": ResolutionMode(name="large", base_size=1280, image_size=1280, crop_mode=False),
    "gundam": ResolutionMode(name="gundam", base_size=1024, image_size=640, crop_mode=True),
}


def get_mode(name: str) -> ResolutionMode:
    """Mode by name (case-insensitive); ModeError lists the known names."""
    key = name.strip().lower()
    if key not in MODES:
        raise ModeError(f"unknown resolution mode {name!r}; known modes: {', '.join(MODES)}")
    return MODES[key]


def candidate_grids(min_tiles: int = MIN_TILES, max_tiles: int = MAX_TILES) -> list[tuple[int, int]]:
    """All (cols, rows) with min_tiles <= cols*rows <= max_tiles, ordered by tile count.

    Within one tile count the order is that of a Python set of int tuples,
    which is deterministic and is the order the reference tiling iterates in
    (it decides ties between equally close aspect ratios).
    """
    grids = {
        (c, r)
        for n in range(min_tiles, max_tiles + 1)
        for c in range(1, n + 1)
        for r in range(1, n + 1)
        if min_tiles <= c * r <= max_tiles
    }
    return sorted(grids, key=lambda g: g[0] * g[1])


def choose_tile_grid(width: int, height: int, tile: int = 640) -> tuple[int, int]:
    """Gundam grid (rows, cols) for a width x height page; (1, 1) means no tiling.

    Closest aspect ratio cols/rows to width/height wins; on an exact tie the
    later (larger) grid wins when the page area exceeds half the grid's pixel
    area (0.5 * tile^2 * cols * rows). Pages with both sides <= tile are not tiled.
    """
    check_image_size(width, height)
    if width <= tile and height <= tile:
        return (1, 1)
    aspect = width / height
    best = (1, 1)
    best_diff = math.inf
    area = width * height
    for cols, rows in candidate_grids():
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best_diff = diff
            best = (cols, rows)
        elif diff == best_diff and area > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)
    return (best[1], best[0])


def check_image_size(width: int, height: int) -> None:
    """ModeError for sizes no page can have (non-positive or over 32768 px a side)."""
    if width <= 0 or height <= 0:
        raise ModeError(f"impossible image size {width}x{height}: sides must be positive")
    if width > 32768 or height > 32768:
        raise ModeError(f"impossible image size {width}x{height}: sides over 32768 px")


def grid_side(view_side_px: int) -> int:
    """Token-grid side q of a square view: view_side / 64."""
    return view_side_px // PIXELS_PER_TOKEN_SIDE


@define(kw_only=True, frozen=True)
class TokenLayout:
    """Image-token layout of one page in one mode.

    Order in the prompt: [local tile grid (if tiled), global grid, separator];
    every grid row ends with a newline token.
    """

    mode: str = field(metadata={"help": "resolution mode name"})
    global_side: int = field(metadata={"help": "global view token-grid side q_g"})
    tile_side: int = field(metadata={"help": "tile token-grid side q_t (0 when not tiled)"})
    rows: int = field(metadata={"help": "tile rows (1 when not tiled)"})
    cols: int = field(metadata={"help": "tile cols (1 when not tiled)"})

    @property
    def num_tiles(self) -> int:
        """Local 640x640 tiles encoded (0 without tiling)."""
        return self.rows * self.cols if self.tile_side else 0

    @property
    def global_tokens(self) -> int:
        """Global grid tokens without newlines: q_g^2."""
        return self.global_side**2

    @property
    def local_tokens(self) -> int:
        """Tile grid tokens without newlines: n_tiles * q_t^2."""
        return self.num_tiles * self.tile_side**2

    @property
    def nominal_tokens(self) -> int:
        """Vision tokens without newlines and separator (FACTS.md 'nominal tokens')."""
        return self.global_tokens + self.local_tokens

    @property
    def global_slots(self) -> int:
        """Global grid with row newlines: q_g * (q_g + 1)."""
        return self.global_side * (self.global_side + 1)

    @property
    def local_slots(self) -> int:
        """Tile grid with row newlines: (q_t*rows) * (q_t*cols + 1); 0 without tiling."""
        if not self.tile_side:
            return 0
        return (self.tile_side * self.rows) * (self.tile_side * self.cols + 1)

    @property
    def prompt_slots(self) -> int:
        """`<image>` slots the prompt must hold: local + global + 1 separator."""
        return self.local_slots + self.global_slots + 1


def token_layout(mode: ResolutionMode | str, width: int, height: int) -> TokenLayout:
    """Layout for a width x height page (pixels) in ``mode``."""
    m = get_mode(mode) if isinstance(mode, str) else mode
    check_image_size(width, height)
    if m.crop_mode:
        rows, cols = choose_tile_grid(width, height, m.image_size)
        tiled = rows * cols > 1
        return TokenLayout(mode=m.name, global_side=grid_side(m.base_size),
                           tile_side=grid_side(m.image_size) if tiled else 0,
                           rows=rows if tiled else 1, cols=cols if tiled else 1)
    return TokenLayout(mode=m.name, global_side=grid_side(m.image_size), tile_side=0, rows=1, cols=1)


def valid_tokens(nominal: int, width: int, height: int) -> int:
    """Valid (non-padding) tokens of a padded view (paper, Eq. 1).

    ceil(N * (1 - (max(w,h) - min(w,h)) / max(w,h))).
    """
    check_image_size(width, height)
    long_side, short_side = max(width, height), min(width, height)
    return math.ceil(nominal * (1 - (long_side - short_side) / long_side))
