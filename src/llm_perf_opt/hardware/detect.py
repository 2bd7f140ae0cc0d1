"""Detect the local GPU: driver name, memory, catalogue entry, clocks, driver/CUDA versions.

The catalogue entry is resolved exactly from the driver's device name and its
total memory (:meth:`GpuCatalog.resolve_device`); a device the catalogue lacks
is reported with the reason, never matched to a look-alike. Clocks and the
driver version come from NVML (``pynvml``, from the nvidia-ml-py package) when
importable, else from ``nvidia-smi``, else they are missing with the reason.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import attrs
from attrs import define, field

from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.catalog import GpuCatalog, load_catalog

NVIDIA_SMI_TIMEOUT_S = 10.0


@define(kw_only=True, frozen=True)
class Clocks:
    """Clock frequencies in MHz as NVML / nvidia-smi report them."""

    sm_max_mhz: int | None = field(default=None, metadata={"help": "maximum SM clock"})
    memory_max_mhz: int | None = field(default=None, metadata={"help": "maximum memory clock"})
    sm_current_mhz: int | None = field(default=None, metadata={"help": "SM clock at query time"})
    memory_current_mhz: int | None = field(default=None, metadata={"help": "memory clock at query time"})


@define(kw_only=True, frozen=True)
class DriverInfo:
    """What the NVIDIA management layer says about the device."""

    via: str = field(metadata={"help": "'nvml' or 'nvidia-smi'"})
    driver_version: str | None = field(default=None, metadata={"help": "driver version, e.g. '580.159.04'"})
    cuda_driver_version: str | None = field(default=None, metadata={
        "help": "newest CUDA version the driver supports, e.g. '13.0'"})
    clocks: Clocks | None = field(default=None, metadata={"help": "clocks of the device"})


@define(kw_only=True, frozen=True)
class DetectedGpu:
    """The local CUDA device as seen by torch and the driver (env.json material)."""

    index: int = field(metadata={"help": "torch CUDA device index"})
    name: str = field(metadata={"help": "torch.cuda.get_device_name"})
    memory_total_bytes: int = field(metadata={"help": "total device memory, bytes"})
    sm_count: int = field(metadata={"help": "multiprocessor count"})
    compute_capability: str = field(metadata={"help": "major.minor, e.g. '9.0'"})
    catalog_key: str | None = field(default=None, metadata={"help": "resolved catalogue key (None: not resolved)"})
    catalog_error: str | None = field(default=None, metadata={"help": "why no catalogue key was resolved"})
    uuid: str | None = field(default=None, metadata={"help": "device UUID ('GPU-...'), when torch exposes it"})
    torch_version: str = field(default="", metadata={"help": "torch.__version__"})
    cuda_runtime_version: str | None = field(default=None, metadata={"help": "torch.version.cuda"})
    driver_version: str | None = field(default=None, metadata={"help": "NVIDIA driver version"})
    cuda_driver_version: str | None = field(default=None, metadata={"help": "CUDA version the driver supports"})
    clocks: Clocks | None = field(default=None, metadata={"help": "clocks, when NVML or nvidia-smi answered"})
    driver_info_via: str | None = field(default=None, metadata={"help": "'nvml' or 'nvidia-smi'"})
    driver_info_missing_reason: str | None = field(default=None, metadata={
        "help": "why driver version / clocks are missing"})

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for env.json."""
        return attrs.asdict(self)


def _mhz(value: Any) -> int | None:
    try:
        v = int(float(str(value).strip()))
    except (TypeError, ValueError):
        return None
    return v if v > 0 else None


def _cuda_version_from_int(v: int) -> str:
    """NVML's integer CUDA version (e.g. 12080) as 'major.minor' ('12.8')."""
    return f"{v // 1000}.{(v % 1000) // 10}"


def _query_nvml(index: int, uuid: str | None) -> DriverInfo:
    import pynvml

    pynvml.nvmlInit()
    try:
        if uuid:
            handle = pynvml.nvmlDeviceGetHandleByUUID(uuid.encode() if isinstance(uuid, str) else uuid)
        else:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else str(driver)
        try:
            cuda = _cuda_version_from_int(int(pynvml.nvmlSystemGetCudaDriverVersion_v2()))
        except Exception:
            cuda = None

        def clock(getter: Any, kind: Any) -> int | None:
            try:
                return _mhz(getter(handle, kind))
            except Exception:
                return None

        clocks = Clocks(
            sm_max_mhz=clock(pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_SM),
            memory_max_mhz=clock(pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_MEM),
            sm_current_mhz=clock(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM),
            memory_current_mhz=clock(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_MEM),
        )
        return DriverInfo(via="nvml", driver_version=driver, cuda_driver_version=cuda, clocks=clocks)
    finally:
        pynvml.nvmlShutdown()


def parse_nvidia_smi_query(line: str) -> tuple[str | None, Clocks]:
    """Parse one line of ``--query-gpu=driver_version,clocks.max.sm,clocks.max.mem,clocks.sm,clocks.mem``
    with ``--format=csv,noheader,nounits``; '[N/A]' fields become None."""
    parts = [p.strip() for p in line.strip().split(",")]
    if len(parts) != 5:
        raise ValueError(f"expected 5 comma-separated fields from nvidia-smi, got {line.strip()!r}")
    driver = parts[0] if parts[0] and not parts[0].startswith("[") else None
    return driver, Clocks(sm_max_mhz=_mhz(parts[1]), memory_max_mhz=_mhz(parts[2]),
                          sm_current_mhz=_mhz(parts[3]), memory_current_mhz=_mhz(parts[4]))


def parse_cuda_version_banner(text: str) -> str | None:
    """The 'CUDA Version: X.Y' of plain ``nvidia-smi`` output, or None."""
    m = re.search(r"CUDA Version:\s*([0-9]+\.[0-9]+)", text)
    return m.group(1) if m else None


def _query_nvidia_smi(index: int, uuid: str | None) -> DriverInfo:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise FileNotFoundError("nvidia-smi not on PATH")
    target = uuid or str(index)
    out = subprocess.run(
        [exe, "-i", target, "--query-gpu=driver_version,clocks.max.sm,clocks.max.mem,clocks.sm,clocks.mem",
         "--format=csv,noheader,nounits"],
        capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=True)
    driver, clocks = parse_nvidia_smi_query(out.stdout.strip().splitlines()[0])
    banner = subprocess.run([exe], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False)
    return DriverInfo(via="nvidia-smi", driver_version=driver,
                      cuda_driver_version=parse_cuda_version_banner(banner.stdout), clocks=clocks)


def query_driver_info(index: int, uuid: str | None) -> tuple[DriverInfo | None, str | None]:
    """(DriverInfo, None) from NVML or nvidia-smi, or (None, reason both failed)."""
    reasons = []
    try:
        return _query_nvml(index, uuid), None
    except ImportError:
        reasons.append("pynvml not importable (pip install nvidia-ml-py)")
    except Exception as exc:
        reasons.append(f"NVML failed: {type(exc).__name__}: {exc}")
    try:
        return _query_nvidia_smi(index, uuid), None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        reasons.append(f"nvidia-smi failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
    return None, "; ".join(reasons)


def uuid_of(props: Any) -> str | None:
    """A device-properties object's UUID as 'GPU-...' (None when torch exposes none)."""
    raw = getattr(props, "uuid", None)
    if raw is None:
        return None
    text = str(raw)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def detect_gpu(index: int = 0, catalog: GpuCatalog | None = None) -> DetectedGpu | None:
    """The CUDA device ``index`` with its catalogue entry, or None when torch sees no CUDA device.

    A name or memory size the catalogue cannot resolve leaves ``catalog_key`` None and
    states why in ``catalog_error`` (the caller decides whether that is fatal).
    """
    import torch

    if not torch.cuda.is_available():
        return None
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise UserError(f"CUDA device index {index} out of range (this machine has {count})")
    props = torch.cuda.get_device_properties(index)
    name = torch.cuda.get_device_name(index)
    memory = int(props.total_memory)
    catalog = catalog if catalog is not None else load_catalog()
    key: str | None = None
    error: str | None = None
    try:
        key = catalog.resolve_device(name, memory).key
    except UserError as exc:
        error = str(exc)
    uuid = uuid_of(props)
    info, reason = query_driver_info(index, uuid)
    return DetectedGpu(
        index=index,
        name=name,
        memory_total_bytes=memory,
        sm_count=int(props.multi_processor_count),
        compute_capability=f"{props.major}.{props.minor}",
        catalog_key=key,
        catalog_error=error,
        uuid=uuid,
        torch_version=str(torch.__version__),
        cuda_runtime_version=torch.version.cuda,
        driver_version=info.driver_version if info else None,
        cuda_driver_version=info.cuda_driver_version if info else None,
        clocks=info.clocks if info else None,
        driver_info_via=info.via if info else None,
        driver_info_missing_reason=reason,
    )
