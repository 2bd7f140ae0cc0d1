"""Input sets: folders, lists, PDF pages and synthetic pages; bad input gives one line naming the problem."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from llm_perf_opt.data.common import ImageCategory, ImageSource
from llm_perf_opt.errors import UserError
from llm_perf_opt.inputs import (
    CATEGORIES,
    InputError,
    collect_pages,
    input_set,
    pages_from_folder,
    pages_from_list,
    pages_from_pdf,
    synthetic_pages,
)
from llm_perf_opt.inputs.synthetic import page_size_px


def _png(path: Path, size: tuple[int, int] = (40, 30), color: str = "white") -> Path:
    Image.new("RGB", size, color).save(path)
    return path


def _pdf(path: Path, sizes_pt: list[tuple[int, int]]) -> Path:
    """A PDF with one page per size; PIL writes 72 dpi pages, so pixel sizes are point sizes."""
    pages = [Image.new("RGB", s, "white") for s in sizes_pt]
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution=72.0)
    return path


def test_folder_is_sorted_and_filtered(tmp_path: Path) -> None:
    _png(tmp_path / "b.png", (50, 60))
    _png(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    pages = pages_from_folder(tmp_path)
    assert [p.name for p in pages] == ["a", "b"]
    assert (pages[1].width, pages[1].height) == (50, 60)
    assert pages[1].load().size == (50, 60) and pages[1].load().mode == "RGB"
    rec = pages[0].to_input_image()
    assert rec.source is ImageSource.FOLDER and rec.path == str((tmp_path / "a.jpg").resolve())


def test_empty_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no images found") as err:
        pages_from_folder(tmp_path)
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)
    with pytest.raises(InputError, match="not found"):
        pages_from_folder(tmp_path / "missing")


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(InputError, match="broken.png: not a readable image"):
        pages_from_folder(tmp_path)


def test_unreadable_images_can_be_skipped_with_their_reason(tmp_path: Path) -> None:
    _png(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    skipped: list[tuple[str, str]] = []
    pages = pages_from_folder(tmp_path, skipped)
    assert [p.name for p in pages] == ["good"]
    assert len(skipped) == 1 and skipped[0][0].endswith("bad.png") and "not a readable image" in skipped[0][1]
    (tmp_path / "good.png").unlink()
    with pytest.raises(InputError, match="no readable images"):
        pages_from_folder(tmp_path, [])


def test_list_resolves_relative_paths_and_comments(tmp_path: Path) -> None:
    sub = tmp_path / "imgs"
    sub.mkdir()
    _png(sub / "x.png")
    _png(sub / "y.png")
    lst = tmp_path / "pages.txt"
    lst.write_text("# pages\nimgs/x.png\n\nimgs/y.png  # second\nimgs/x.png\n")
    pages = pages_from_list(lst)
    assert [p.name for p in pages] == ["x", "y", "x-2"]
    assert all(p.kind is ImageSource.LIST for p in pages)
    lst.write_text("imgs/missing.png\n")
    with pytest.raises(InputError, match="missing.png: image file not found"):
        pages_from_list(lst)


def test_pdf_pages_render_at_the_requested_dpi(tmp_path: Path) -> None:
    pdf = _pdf(tmp_path / "doc.pdf", [(144, 216), (216, 144)])  # 2 x 3 in and 3 x 2 in
    pages = pages_from_pdf(pdf, dpi=100)
    assert [(p.width, p.height) for p in pages] == [(200, 300), (300, 200)]
    assert [p.to_input_image().page_index for p in pages] == [0, 1]
    assert pages[0].to_input_image().source is ImageSource.PDF
    assert pages[1].load().size == (300, 200)


def test_bad_pdfs_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.4 garbage that no renderer accepts")
    with pytest.raises(InputError, match="bad.pdf: PDF could not be opened"):
        pages_from_pdf(bad, dpi=100)
    with pytest.raises(InputError, match="PDF not found"):
        pages_from_pdf(tmp_path / "none.pdf", dpi=100)
    with pytest.raises(InputError, match="--dpi 0"):
        pages_from_pdf(bad, dpi=0)


def test_synthetic_pages_are_deterministic_real_paper_sizes() -> None:
    pages = synthetic_pages(6, seed=3, dpi=150)
    assert [p.category for p in pages] == list(CATEGORIES) * 2
    assert (pages[0].width, pages[0].height) == page_size_px("A4", 150) == (1240, 1754)
    assert (pages[3].width, pages[3].height) == page_size_px("Letter", 150) == (1275, 1650)
    first = hashlib.sha256(pages[0].load().tobytes()).hexdigest()
    again = hashlib.sha256(synthetic_pages(1, seed=3, dpi=150)[0].load().tobytes()).hexdigest()
    other = hashlib.sha256(synthetic_pages(1, seed=4, dpi=150)[0].load().tobytes()).hexdigest()
    assert first == again != other
    img = pages[2].load()
    assert img.size == (1240, 1754)
    # an image-rich page has far more distinct colours than a text page
    def colours(im: Image.Image) -> int:
        return len(im.resize((200, 280)).getcolors(maxcolors=1 << 24) or [])

    assert colours(img) > 4 * colours(pages[0].load())
    assert input_set(pages, "synthetic").images[1].category is ImageCategory.MIXED_LAYOUT


def test_synthetic_categories_and_bad_values() -> None:
    pages = synthetic_pages(2, categories=["image_rich"])
    assert {p.category for p in pages} == {"image_rich"}
    with pytest.raises(UserError, match="unknown synthetic category 'photos'"):
        synthetic_pages(1, categories=["photos"])
    with pytest.raises(UserError, match="--synthetic 0"):
        synthetic_pages(0)


def test_collect_combines_sources_in_order(tmp_path: Path) -> None:
    _png(tmp_path / "p.png")
    pdf = _pdf(tmp_path / "d.pdf", [(72, 72)])
    pages = collect_pages(images=tmp_path, pdf=pdf, dpi=72, synthetic=2, synthetic_categories=["text_heavy"])
    assert [p.kind for p in pages] == [ImageSource.FOLDER, ImageSource.PDF, ImageSource.SYNTHETIC,
                                       ImageSource.SYNTHETIC]
    assert len({p.name for p in pages}) == 4
    assert len(collect_pages(synthetic=5, limit=2)) == 2
    with pytest.raises(InputError, match="no inputs"):
        collect_pages()


def test_a_cached_page_is_read_once_and_loads_copies(tmp_path: Path) -> None:
    path = _png(tmp_path / "a.png", (40, 30), "red")
    page = pages_from_folder(tmp_path)[0]
    cached = page.cached()
    path.unlink()  # the file is gone: the cached page no longer reads it
    first, second = cached.load(), cached.load()
    assert first.size == (40, 30) and first.getpixel((0, 0)) == (255, 0, 0)
    assert first is not second  # each load is a copy: a caller may change its image
    assert (cached.name, cached.width, cached.height) == (page.name, page.width, page.height)
    with pytest.raises(InputError):
        page.load()
