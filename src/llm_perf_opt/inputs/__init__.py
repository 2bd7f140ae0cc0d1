"""Input page sets for profiling: image folders, file lists, PDF pages and synthetic documents."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llm_perf_opt.data.profile import InputSet
from llm_perf_opt.inputs.pages import (
    IMAGE_SUFFIXES,
    InputError,
    Page,
    combine,
    page_from_file,
    pages_from_folder,
    pages_from_list,
    pages_from_pdf,
)
from llm_perf_opt.inputs.synthetic import CATEGORIES, parse_categories, synthetic_pages

__all__ = [
    "CATEGORIES", "IMAGE_SUFFIXES", "InputError", "Page", "collect_pages", "combine", "input_set",
    "page_from_file", "pages_from_folder", "pages_from_list", "pages_from_pdf", "parse_categories",
    "synthetic_pages",
]


def collect_pages(*, images: Path | None = None, image_list: Path | None = None, pdf: Path | None = None,
                  dpi: int = 150, synthetic: int = 0, synthetic_categories: Sequence[str] | None = None,
                  synthetic_dpi: int = 150, seed: int = 0, limit: int | None = None,
                  skipped: list[tuple[str, str]] | None = None) -> list[Page]:
    """All pages from the given sources, in the order folder, list, PDF, synthetic.

    ``limit`` keeps only the first N pages. InputError when no source is given
    or a source is empty or unreadable; with ``skipped`` given, unreadable
    images of a folder or list are listed there as (path, reason) instead.
    """
    groups: list[list[Page]] = []
    if images is not None:
        groups.append(pages_from_folder(images, skipped))
    if image_list is not None:
        groups.append(pages_from_list(image_list, skipped))
    if pdf is not None:
        groups.append(pages_from_pdf(pdf, dpi))
    if synthetic:
        groups.append(synthetic_pages(synthetic, categories=parse_categories(synthetic_categories), seed=seed,
                                      dpi=synthetic_dpi))
    if not groups:
        raise InputError("no inputs: give --images DIR, --image-list FILE, --pdf FILE or --synthetic N")
    pages = combine(groups)
    if limit is not None:
        if limit <= 0:
            raise InputError(f"--limit {limit}: must be >= 1")
        pages = pages[:limit]
    return pages


def input_set(pages: Sequence[Page], origin: str) -> InputSet:
    """The data-model record of a page list."""
    return InputSet(origin=origin, images=[p.to_input_image() for p in pages])
