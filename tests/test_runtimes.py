"""Choosing the Python runtime a backend needs, and the error when it is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose_config

from src import runner


@pytest.mark.parametrize(
    ("backend", "runtime"), [("tensorflow", "modern"), ("theano", "legacy"), ("tensorflow1", "legacy")]
)
def test_backend_selects_runtime(backend: str, runtime: str):
    assert compose_config(["backend={}".format(backend)]).backend.runtime == runtime


def test_missing_legacy_runtime_names_install_command(monkeypatch, tmp_path: Path):
    missing = tmp_path / ".venv-legacy" / "bin" / "python"
    monkeypatch.setitem(runner.RUNTIME_PYTHONS, "legacy", missing)

    with pytest.raises(runner.RuntimeMissing) as raised:
        runner.run_training(compose_config(["backend=theano", "tracking.uri=sqlite:///{}".format(tmp_path / "db")]))

    message = str(raised.value)
    assert "backend=theano needs the legacy runtime" in message
    assert str(missing) in message
    assert "bash scripts/setup.sh --no-run" in message
    assert not (tmp_path / "db").exists()


def test_theano_flags_pin_float32_openblas_and_cache(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("THEANO_FLAGS", "optimizer=fast_compile")
    cfg = compose_config(["backend=theano", "backend.compiledir={}".format(tmp_path)])

    flags = runner._worker_environment(cfg)["THEANO_FLAGS"].split(",")

    assert "floatX=float32" in flags
    assert "blas.ldflags=-lopenblas" in flags
    assert "base_compiledir={}".format(tmp_path) in flags
    assert flags[-2] == "optimizer=fast_compile"
    assert flags[-1] == "device=cpu"
