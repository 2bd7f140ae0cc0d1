"""The run environment for env.json: GPU (name, catalogue key, driver, CUDA, clocks), software, git revision."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from llm_perf_opt.hardware.detect import DetectedGpu, detect_gpu

#: git is asked for at most this long (seconds).
GIT_TIMEOUT_S = 5.0


#: Environment variable naming the project revision where the tree has no .git (e.g. a copied tree).
GIT_REVISION_ENV = "LLM_PERF_OPT_GIT_REVISION"


def git_revision(start: Path | None = None, scope: Path | None = None) -> tuple[str | None, bool | None]:
    """(HEAD commit, working tree dirty?) of the repository holding this package; with ``scope``, dirty only
    where files under that path differ from HEAD.

    Outside a git checkout: (``$LLM_PERF_OPT_GIT_REVISION``, None), or (None, None) when unset.
    """
    root = start or Path(__file__).resolve().parent
    fallback = os.environ.get(GIT_REVISION_ENV) or None
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=GIT_TIMEOUT_S, check=False)
        if rev.returncode != 0:
            return fallback, None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no",
                                 *(["--", str(scope)] if scope is not None else [])], cwd=root,
                                capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False)
        return rev.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return fallback, None


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return str(getattr(mod, "__version__", None))


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The host CPU's model name (Linux: ``cpuinfo``'s 'model name'; else platform.processor()); None
    when neither says. Tells apart the machines a probe and a run were taken on."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def collect_env(device: torch.device) -> tuple[dict[str, Any], DetectedGpu | None]:
    """env.json content and the detected GPU (None on CPU runs)."""
    gpu = detect_gpu(device.index or 0) if device.type == "cuda" else None
    rev, dirty = git_revision()
    env: dict[str, Any] = {
        "device": str(device),
        "gpu": gpu.as_dict() if gpu else None,
        "cpu": {"machine": platform.machine(), "processor": platform.processor() or None, "model": cpu_model(),
                "logical_cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "software": {
            "python": sys.version.split()[0], "platform": platform.platform(),
            "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "transformers": _version("transformers"), "numpy": _version("numpy"),
            "pillow": _version("PIL"), "pypdfium2": _version("pypdfium2"),
        },
        "project": {"git_revision": rev, "git_dirty": dirty},
    }
    return env, gpu
