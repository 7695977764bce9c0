"""Folders the suite reads and writes outside a run's own artifacts."""

from __future__ import annotations

import os
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def suite_cache_root() -> Path:
    """Return $XDG_CACHE_HOME/keras-backend-study (~/.cache/... when XDG_CACHE_HOME is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "keras-backend-study"
