"""Per-pass measurement records, appended to a JSON Lines file as each pass completes.

Each record is one line written with a single ``os.write`` on a file opened
with ``O_APPEND`` and then fsync'd, so a record is either wholly on disk or
not at all: Ctrl-C, an out-of-memory error or a crash keeps every pass
measured before it. :func:`read_records` skips a torn last line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from attrs import asdict, define, field

from llm_perf_opt.errors import UserError

#: Status of a pass record.
STATUS_OK = "ok"
STATUS_OOM = "oom"
STATUS_ERROR = "error"


@define(kw_only=True)
class PassRecord:
    """One measured pass: one batch of pages, one repeat. Times in ms."""

    pass_index: int = field(metadata={"help": "0-based index of the pass in the run"})
    batch_index: int = field(metadata={"help": "0-based batch index (batch b holds images b*B .. b*B+B-1)"})
    repeat_index: int = field(metadata={"help": "0-based measured repeat"})
    image_indices: list[int] = field(metadata={"help": "indices into the input set of the batch's pages"})
    image_names: list[str] = field(metadata={"help": "page names of the batch"})
    status: str = field(default=STATUS_OK, metadata={"help": "'ok', 'oom' or 'error'"})
    error: str | None = field(default=None, metadata={"help": "one-line reason when status is not ok"})
    load_ms: float = field(default=0.0, metadata={"help": "host time decoding/drawing the page images, ms"})
    pages_reused: bool = field(
        default=False, metadata={"help": "the pass ran the page images of the pass before it (same pages), "
                                         "not loaded again: load_ms is 0"})
    preprocess_ms: float = field(default=0.0, metadata={"help": "host preprocessing (resize, tile, normalise), ms"})
    stage_ms: dict[str, float] = field(factory=dict, metadata={"help": "stage name -> elapsed ms"})
    decode_step_ms: list[float] = field(factory=list, metadata={"help": "elapsed ms of each decode step"})
    e2e_ms: float = field(default=0.0, metadata={"help": "host wall time preprocess+prefill+decode (synced), ms"})
    prompt_tokens: int = field(default=0, metadata={"help": "prompt tokens summed over the batch (real, no pad)"})
    padded_prompt_length: int = field(default=0, metadata={"help": "padded prompt length L (tokens)"})
    image_tokens: int = field(default=0, metadata={"help": "nominal vision tokens summed over the batch"})
    image_slots: int = field(default=0, metadata={"help": "<image> slots summed over the batch"})
    num_tiles: list[int] = field(factory=list, metadata={"help": "Gundam tiles per page (0 when not tiled)"})
    generated_tokens: int = field(default=0, metadata={"help": "tokens generated summed over the batch"})
    decode_steps: int = field(default=0, metadata={"help": "decode steps run (each picks one token per row)"})
    decode_forwards: int = field(default=0, metadata={"help": "decoder forward passes in the decode stage"})
    peak_memory_bytes: int | None = field(default=None, metadata={"help": "max allocated device memory, bytes"})
    host_probe_us: float | None = field(
        default=None, metadata={"help": "host us per tiny eager op, probed just before the pass (host speed)"})
    host_module_probe_us: float | None = field(
        default=None, metadata={"help": "host us per aten call of a tiny two-layer decoder forward of the model's "
                                        "own code, probed just before the pass (host speed on the model's path)"})
    host_probe_after_us: float | None = field(
        default=None, metadata={"help": "host us per tiny eager op, probed just after the pass (with the probe "
                                        "before it, brackets the host's speed over the pass)"})
    host_module_probe_after_us: float | None = field(
        default=None, metadata={"help": "host us per aten call of the tiny decoder forward, probed just after "
                                        "the pass"})

    device_allocs: int | None = field(
        default=None, metadata={"help": "cudaMalloc calls of the caching allocator during the pass, preprocessing "
                                        "to the end of decode (its num_device_alloc counter; None off CUDA)"})
    decode_device_allocs: int | None = field(
        default=None, metadata={"help": "the same over the decode stage alone"})
    device_frees: int | None = field(
        default=None, metadata={"help": "cudaFree calls of the caching allocator during the pass (num_device_free)"})
    alloc_retries: int | None = field(
        default=None, metadata={"help": "allocations that first failed and freed the allocator's cache to retry "
                                        "(num_alloc_retries), each a device sync"})
    peak_reserved_bytes: int | None = field(
        default=None, metadata={"help": "max device memory reserved by the caching allocator during the pass, "
                                        "bytes"})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (one JSON line)."""
        return asdict(self)


class RecordWriter:
    """Appends PassRecords to ``path`` (JSON Lines), one atomic write per record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def append(self, record: PassRecord) -> None:
        """Write one record as one line and fsync."""
        data = (json.dumps(record.to_dict(), sort_keys=True) + "\n").encode()
        os.write(self._fd, data)
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: Path) -> list[PassRecord]:
    """Every complete record of a JSON Lines file (a torn last line is skipped)."""
    if not path.exists():
        return []
    out: list[PassRecord] = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.append(PassRecord(**raw))
    return out


def read_json_objects(path: Path, error: type[UserError] = UserError) -> list[dict[str, Any]]:
    """Every JSON object of a JSON Lines file, strictly: a line that is not one is ``error`` naming the file and
    line, except a last line cut short (a run stopped while writing it: no newline at the end), which is left
    out. :func:`read_records` instead skips what it cannot parse, so that a run keeps its other passes."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot be read ({exc.__class__.__name__})") from None
    lines = text.splitlines()
    out: list[dict[str, Any]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines) and not text.endswith("\n"):
                continue
            raise error(f"{path} line {n}: not valid JSON; truncated or malformed") from None
        if not isinstance(obj, dict):
            raise error(f"{path} line {n}: not a JSON object")
        out.append(obj)
    return out
