"""Input pages for profiling: image folders, file lists and PDF pages.

A :class:`Page` is one page to run: its name, where it came from, its size in
pixels, its category, and a loader that returns the RGB image. Loaders are
lazy (an image folder is opened one page at a time) but every source is
checked when it is collected, so a bad folder, an unreadable file or a PDF
that fails to render ends the run with one line before any model is built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
from attrs import define, field
from PIL import Image, UnidentifiedImageError

from llm_perf_opt.data.common import ImageCategory, ImageSource
from llm_perf_opt.data.profile import InputImage
from llm_perf_opt.errors import UserError

#: File suffixes read from an image folder (lower-case).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")

#: Category of pages read from files or PDFs (synthetic pages carry their own category).
CATEGORY_UNKNOWN = ImageCategory.UNKNOWN.value


class InputError(UserError):
    """An input set that cannot be read: empty folder, unreadable image, PDF that fails."""


@define(kw_only=True, frozen=True)
class Page:
    """One input page.

    ``width`` and ``height`` are the page size in pixels as the model sees it
    (before mode-specific resizing); ``loader()`` returns an RGB PIL image of
    exactly that size.
    """

    name: str = field(metadata={"help": "stable page id, unique within the set"})
    source: str = field(metadata={"help": "file path, 'PDF#page=N' or the synthetic id"})
    width: int = field(metadata={"help": "page width in pixels"})
    height: int = field(metadata={"help": "page height in pixels"})
    category: str = field(metadata={"help": "text_heavy | mixed_layout | image_rich | unknown"})
    kind: ImageSource = field(metadata={"help": "folder | list | pdf | synthetic"})
    loader: Callable[[], Image.Image] = field(repr=False, eq=False, metadata={"help": "returns the RGB image"})
    path: str | None = field(default=None, metadata={"help": "absolute file path (null for synthetic pages)"})
    page_index: int | None = field(default=None, metadata={"help": "0-based PDF page index (pdf only)"})

    def load(self) -> Image.Image:
        """The page as an RGB image (InputError when it cannot be read now)."""
        img = self.loader()
        return img if img.mode == "RGB" else img.convert("RGB")

    def cached(self) -> Page:
        """This page read (or drawn) once now; each load of the result returns a copy of that image
        (for passes that repeat one page across a large batch)."""
        image = self.load()
        return attrs.evolve(self, loader=image.copy)

    def to_input_image(self) -> InputImage:
        """The data-model record of this page (inputs.yaml, metrics.json)."""
        synthetic = self.kind is ImageSource.SYNTHETIC
        return InputImage(path=None if synthetic else self.path, synthetic_id=self.source if synthetic else None,
                          width_px=self.width, height_px=self.height, category=ImageCategory(self.category),
                          source=self.kind, page_index=self.page_index)


def _probe_image(path: Path) -> tuple[int, int]:
    """(width, height) of an image file; InputError names the file when it is not a readable image."""
    try:
        with Image.open(path) as img:
            img.verify()  # checks the file structure without decoding all pixels
        with Image.open(path) as img:
            return int(img.width), int(img.height)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: image file not found") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from exc


def _file_loader(path: Path) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise InputError(f"{path}: image could not be decoded ({exc})") from exc

    return load


def page_from_file(path: Path, kind: ImageSource = ImageSource.FOLDER) -> Page:
    """A page read from one image file (checked now, decoded when loaded)."""
    width, height = _probe_image(path)
    abs_path = str(path.resolve())
    return Page(name=path.stem, source=abs_path, width=width, height=height, category=CATEGORY_UNKNOWN,
                kind=kind, loader=_file_loader(path), path=abs_path)


def _probe_all(paths: Sequence[Path], kind: ImageSource, skipped: list[tuple[str, str]] | None,
               where: Path) -> list[Page]:
    """Pages of ``paths``; an unreadable file raises, or is appended to ``skipped`` (ref, reason) when given."""
    pages: list[Page] = []
    problems: list[tuple[str, str]] = []
    for p in paths:
        try:
            pages.append(page_from_file(p, kind))
        except InputError as exc:
            if skipped is None:
                raise
            problems.append((str(p.resolve()), str(exc)))
    if skipped is not None:
        skipped.extend(problems)
    if not pages and problems:
        raise InputError(f"{where}: no readable images ({len(problems)} unreadable; first: {problems[0][1]})")
    return pages


def pages_from_folder(folder: Path, skipped: list[tuple[str, str]] | None = None) -> list[Page]:
    """Every image in ``folder`` (not recursive), sorted by file name.

    InputError when the folder is missing, is not a folder, or holds no image
    with a suffix in :data:`IMAGE_SUFFIXES`. An unreadable image raises too,
    unless ``skipped`` is given: then it is listed there as (path, reason)
    and the others are kept (InputError only when none is readable).
    """
    if not folder.exists():
        raise InputError(f"{folder}: image folder not found")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (use --image-list for a list of files)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    return _probe_all(files, ImageSource.FOLDER, skipped, folder)


def pages_from_list(list_file: Path, skipped: list[tuple[str, str]] | None = None) -> list[Page]:
    """Images named one per line in ``list_file``; '#' starts a comment, blank lines are skipped.

    Relative paths are resolved against the list file's folder. ``skipped``:
    as in :func:`pages_from_folder`.
    """
    try:
        lines = list_file.read_text().splitlines()
    except FileNotFoundError as exc:
        raise InputError(f"{list_file}: image list not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{list_file}: image list not readable ({exc})") from exc
    paths: list[Path] = []
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        p = Path(text)
        paths.append(p if p.is_absolute() else list_file.parent / p)
    if not paths:
        raise InputError(f"{list_file}: image list names no files")
    return _unique_names(_probe_all(paths, ImageSource.LIST, skipped, list_file))


def pages_from_pdf(pdf_path: Path, dpi: int) -> list[Page]:
    """Every page of a PDF rendered at ``dpi`` (pixels per inch) with pypdfium2.

    All pages are rendered now (so a PDF that fails to render stops the run
    before measuring); the images are kept in memory.
    """
    if dpi <= 0 or dpi > 1200:
        raise InputError(f"--dpi {dpi}: must be between 1 and 1200")
    if not pdf_path.exists():
        raise InputError(f"{pdf_path}: PDF not found")
    import pypdfium2 as pdfium

    pages: list[Page] = []
    try:
        doc = pdfium.PdfDocument(str(pdf_path))
    except Exception as exc:  # pypdfium2 raises PdfiumError (and OSError) for unreadable files
        raise InputError(f"{pdf_path}: PDF could not be opened ({exc})") from exc
    try:
        if len(doc) == 0:
            raise InputError(f"{pdf_path}: PDF has no pages")
        for index in range(len(doc)):
            try:
                pdf_page = doc[index]
                bitmap = pdf_page.render(scale=dpi / 72.0)  # PDF user space is 72 points per inch
                image = bitmap.to_pil().convert("RGB")
            except Exception as exc:
                raise InputError(f"{pdf_path}: page {index + 1} failed to render ({exc})") from exc
            abs_path = str(pdf_path.resolve())
            pages.append(Page(name=f"{pdf_path.stem}-p{index + 1:03d}", source=f"{abs_path}#page={index}",
                              width=image.width, height=image.height, category=CATEGORY_UNKNOWN,
                              kind=ImageSource.PDF, loader=_const_loader(image), path=abs_path,
                              page_index=index))
    finally:
        doc.close()
    return pages


def _const_loader(image: Image.Image) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        return image

    return load


def _unique_names(pages: Sequence[Page]) -> list[Page]:
    """Suffix repeated names with -2, -3 ... so every page name is unique."""
    seen: dict[str, int] = {}
    out: list[Page] = []
    for page in pages:
        count = seen.get(page.name, 0) + 1
        seen[page.name] = count
        if count == 1:
            out.append(page)
        else:
            out.append(attrs.evolve(page, name=f"{page.name}-{count}"))
    return out


def combine(groups: Sequence[Sequence[Page]]) -> list[Page]:
    """Concatenate page groups in order, keeping names unique."""
    return _unique_names([p for g in groups for p in g])
