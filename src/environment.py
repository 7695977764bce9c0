"""Description of the machine a run ran on: hardware, git commit, thread settings."""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from pathlib import Path

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "OPENBLAS_CORETYPE",
    "THEANO_FLAGS",
    "KERAS_BACKEND",
    "CUDA_VISIBLE_DEVICES",
    "JAX_PLATFORMS",
)


@functools.cache  # the hardware stays the same for every run of a sweep
def cpu_description() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return "{} ({} logical cores)".format(model, os.cpu_count())


@functools.cache  # the hardware stays the same for every run of a sweep
def nvidia_gpus() -> str:
    """Return the GPUs nvidia-smi lists, or "none" where there is no nvidia-smi or no GPU."""
    if shutil.which("nvidia-smi") is None:
        return "none"
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "none (nvidia-smi failed)"
    return listing.replace("\n", "; ") or "none"


def git_state(repository: Path) -> dict[str, str]:
    """Return the commit and whether the work tree had uncommitted changes; empty outside git."""

    def git(*arguments: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repository), *arguments], capture_output=True, text=True, timeout=20, check=True
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": str(bool(git("status", "--porcelain")))}
    except (OSError, subprocess.SubprocessError):
        return {}


def thread_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """Return the variables that steer threads, backend and devices in `env` (default: this process)."""
    env = os.environ if env is None else env
    return {name: env.get(name, "unset") for name in THREAD_VARIABLES}
