"""JSON / YAML dump and load for every report type, with schema-version checks.

* One cattrs converter (:data:`converter`) turns the attrs models into plain
  JSON-safe dicts: enums as their values, tuples as lists, datetimes as ISO
  8601 strings, dict keys (stages, categories) as strings.
* Writes are atomic: a temp file in the target folder, fsync, then rename;
  an interrupted run never leaves half a file. :func:`all_or_nothing` makes a
  set of files one write (a run's or a rebuild's reports).
* :func:`load_report` turns every failure (missing, truncated, malformed,
  wrong schema version, bad field) into :class:`ReportLoadError`, whose
  one-line message names the file, the field and the problem.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import types
import typing
from collections.abc import Callable, Iterator
from datetime import datetime
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, TypeVar

import attrs
import cattrs
import yaml
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from llm_perf_opt.data.validators import FieldValueError
from llm_perf_opt.errors import UserError

T = TypeVar("T")

#: File suffixes read/written as JSON and as YAML.
JSON_SUFFIXES = (".json",)
YAML_SUFFIXES = (".yaml", ".yml")


class ReportLoadError(UserError):
    """A report file that is missing, unreadable, malformed, of the wrong version or type."""


def _structure_datetime(value: Any, _: type) -> datetime:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an ISO 8601 timestamp string")
    return datetime.fromisoformat(value)


def _enum_value(member: Enum) -> Any:
    return member.value


def make_converter() -> cattrs.Converter:
    """A converter for the domain models (detailed validation, extra keys forbidden)."""
    conv = cattrs.Converter(detailed_validation=True, forbid_extra_keys=True)
    conv.register_unstructure_hook(datetime, lambda dt: dt.isoformat())
    # StrEnum members are str subclasses that cattrs would pass through; YAML's safe
    # dumper rejects them, so every enum (values and dict keys) becomes its plain value.
    conv.register_unstructure_hook(StrEnum, _enum_value)
    conv.register_unstructure_hook(Enum, _enum_value)
    conv.register_structure_hook(datetime, _structure_datetime)
    return conv


#: The converter shared by every data-model dump and load.
converter = make_converter()


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain JSON-safe dict of an attrs model."""
    data = converter.unstructure(obj)
    if not isinstance(data, dict):
        raise TypeError(f"{type(obj).__name__} does not unstructure to a mapping")
    return data


def from_dict(data: Any, cls: type[T], *, source: str = "<dict>") -> T:
    """Build ``cls`` from a plain dict; ReportLoadError names ``source``, the field and the problem."""
    if not isinstance(data, dict):
        raise ReportLoadError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    _check_schema_version(data, cls, source)
    try:
        return converter.structure(data, cls)
    except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError) as exc:
        raise ReportLoadError(f"{source}: {describe_error(exc)}") from exc
    except FieldValueError as exc:
        raise ReportLoadError(f"{source}: field {exc.field_name}: {exc.problem}") from exc
    except UserError as exc:
        raise ReportLoadError(f"{source}: {_one_line(str(exc))}") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise ReportLoadError(f"{source}: {_one_line(str(exc))}") from exc


def _check_schema_version(data: dict[str, Any], cls: type, source: str) -> None:
    fields = attrs.fields_dict(cls) if attrs.has(cls) else {}
    if "schema_version" not in fields:
        return
    expected = fields["schema_version"].default
    found = data.get("schema_version")
    if found is None:
        raise ReportLoadError(f"{source}: field schema_version: missing (expected {expected!r})")
    if found != expected:
        raise ReportLoadError(
            f"{source}: field schema_version: {found!r} is not {expected!r} ({cls.__name__} expected)"
        )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _format_leaf(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, FieldValueError):
        return exc.problem
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ForbiddenExtraKeysError):
        return f"unknown field(s) {', '.join(sorted(exc.extra_fields))}"
    nullable = ""
    args = typing.get_args(type_)
    if typing.get_origin(type_) in (types.UnionType, typing.Union) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            type_, nullable = inner[0], " or null"
    if isinstance(type_, type) and issubclass(type_, Enum):
        allowed = ", ".join(str(m.value) for m in type_)
        return f"not one of {allowed}{nullable}"
    if isinstance(exc, TypeError | ValueError) and type_ is not None:
        name = (getattr(type_, "__name__", None) or str(type_)) + nullable
        detail = _one_line(str(exc))
        return f"expected {name} ({detail})" if detail else f"expected {name}"
    return _one_line(str(exc)) or type(exc).__name__


def _walk(exc: BaseException, path: str, out: list[str]) -> None:
    """Flatten a cattrs exception group into 'field <path>: <problem>' lines."""
    if isinstance(exc, ClassValidationError | IterableValidationError):
        excs_with_notes, other = exc.group_exceptions()
        for sub, note in excs_with_notes:
            name = getattr(note, "name", None)
            index = getattr(note, "index", None)
            if name is not None:
                sub_path = f"{path}.{name}" if path else str(name)
            elif index is not None:
                sub_path = f"{path}[{index!r}]" if isinstance(index, str) else f"{path}[{index}]"
            else:
                sub_path = path
            leaf_type = getattr(note, "type", None)
            if isinstance(sub, ClassValidationError | IterableValidationError):
                _walk(sub, sub_path, out)
            else:
                _leaf(sub, sub_path, leaf_type, out)
        for sub in other:
            _leaf(sub, path, None, out)
        return
    _leaf(exc, path, None, out)


def _leaf(exc: BaseException, path: str, type_: Any, out: list[str]) -> None:
    if isinstance(exc, ClassValidationError | IterableValidationError):
        _walk(exc, path, out)
        return
    if isinstance(exc, FieldValueError):
        path = f"{path}.{exc.field_name}" if path else exc.field_name
    where = f"field {path}" if path else "top level"
    out.append(f"{where}: {_format_leaf(exc, type_)}")


def describe_error(exc: BaseException) -> str:
    """One line for a cattrs structuring failure: the first problem, and how many more."""
    lines: list[str] = []
    _walk(exc, "", lines)
    if not lines:
        return _one_line(str(exc))
    more = f" (and {len(lines) - 1} more problem(s))" if len(lines) > 1 else ""
    return lines[0] + more


#: per thread, the writes of its open :func:`all_or_nothing` block: (temporary file, target), in write order
#: (a block holds back its own thread's writes only)
_LOCAL = threading.local()


def _staged() -> list[list[tuple[str, Path]]]:
    """This thread's stack of open blocks (empty, or the one block: an inner block joins the outer)."""
    stack: list[list[tuple[str, Path]]] | None = getattr(_LOCAL, "staged", None)
    if stack is None:
        stack = _LOCAL.staged = []
    return stack


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in its folder, fsynced and renamed over it: an
    interruption leaves the old file whole, never a part of the new one. Inside :func:`all_or_nothing` the
    rename waits for the end of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        stack = _staged()
        if stack:
            stack[-1].append((tmp_name, path))
        else:
            os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def all_or_nothing() -> Iterator[None]:
    """A set of files written together: inside the block :func:`atomic_write_bytes` (and every writer built on
    it) writes temporary files only (in this thread: another thread's writes are not held); a block that ends
    normally renames them all over their targets, with Ctrl-C (SIGINT) held until the last rename, and a block
    left by an exception (Ctrl-C included) removes them, so that every target keeps its old content. A block
    inside another joins it."""
    stack = _staged()
    if stack:
        yield
        return
    staged: list[tuple[str, Path]] = []
    stack.append(staged)
    try:
        try:
            yield
        finally:
            stack.pop()
    except BaseException:
        for tmp_name, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        raise
    with _sigint_held():
        for i, (tmp_name, path) in enumerate(staged):
            try:
                os.replace(tmp_name, path)
            except BaseException:  # a target that cannot be replaced: leave no temporary file behind
                for rest, _ in staged[i:]:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(rest)
                raise


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold SIGINT for the block (main thread only; elsewhere Python delivers no signal): a Ctrl-C in it is
    raised as KeyboardInterrupt once the block is done."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
    if caught:
        raise KeyboardInterrupt


def dumps_json(obj: Any) -> str:
    """JSON text of an attrs model (2-space indent, key order as declared, trailing newline)."""
    return json.dumps(to_dict(obj), indent=2, allow_nan=False) + "\n"


def dumps_yaml(obj: Any) -> str:
    """YAML text of an attrs model (block style, key order as declared)."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False, allow_unicode=True)


def dump_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically; returns the path."""
    target = Path(path)
    atomic_write_text(target, dumps_json(obj))
    return target


def dump_yaml(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as YAML to ``path`` atomically; returns the path."""
    target = Path(path)
    atomic_write_text(target, dumps_yaml(obj))
    return target


def dump(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write JSON or YAML by the suffix of ``path`` (.json, .yaml, .yml)."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix in JSON_SUFFIXES:
        return dump_json(obj, target)
    if suffix in YAML_SUFFIXES:
        return dump_yaml(obj, target)
    raise UserError(f"{target}: unknown report suffix {target.suffix!r} (use .json, .yaml or .yml)")


def _parse(path: Path, text: str) -> Any:
    suffix = path.suffix.lower()
    if suffix in JSON_SUFFIXES:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReportLoadError(
                f"{path}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg}); truncated or malformed"
            ) from exc
    if suffix in YAML_SUFFIXES:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
            problem = getattr(exc, "problem", None) or _one_line(str(exc))
            raise ReportLoadError(f"{path}: not valid YAML ({where}{problem}); truncated or malformed") from exc
    raise ReportLoadError(f"{path}: unknown report suffix {path.suffix!r} (use .json, .yaml or .yml)")


def load_report(path: str | os.PathLike[str], cls: type[T]) -> T:
    """Load a ``cls`` report from JSON or YAML (by suffix); ReportLoadError on any problem."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ReportLoadError(f"{source}: file not found") from exc
    except IsADirectoryError as exc:
        raise ReportLoadError(f"{source}: is a directory, not a report file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportLoadError(f"{source}: not readable ({_one_line(str(exc))})") from exc
    if not text.strip():
        raise ReportLoadError(f"{source}: empty file")
    return from_dict(_parse(source, text), cls, source=str(source))


def loader(cls: type[T]) -> Callable[[str | os.PathLike[str]], T]:
    """``load_report`` bound to one class (handy as an argparse ``type=``)."""
    return lambda path: load_report(path, cls)
