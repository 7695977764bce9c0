"""The training-process supervisor, on small real child processes."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from src.supervisor import run_worker

# A stand-in training process: reports `count` epochs on the report pipe, with pure-Python
# arithmetic (user CPU time) before each.
REPORTER = textwrap.dedent(
    """
    import json, os, sys
    count = int(sys.argv[1])
    stream = os.fdopen(int(os.environ["WORKER_REPORT_FD"]), "w")
    stream.write("this line is not JSON\\n")
    for epoch in range(1, count + 1):
        total = 0
        for number in range(2000000):
            total += number
        stream.write(json.dumps({"event": "epoch", "epoch": epoch}) + "\\n")
        stream.flush()
    """
)


def _run(tmp_path: Path, count: int, on_report, on_start=lambda pid: None):
    script = tmp_path / "reporter.py"
    script.write_text(REPORTER)
    with open(tmp_path / "stderr.log", "w") as stderr:
        return run_worker(
            [sys.executable, str(script), str(count)],
            env=dict(os.environ),
            cwd=tmp_path,
            stdout=None,
            stderr=stderr,
            on_report=on_report,
            on_start=on_start,
        )


def test_reports_arrive_and_times_are_measured(tmp_path: Path):
    reports = []

    result = _run(tmp_path, 3, reports.append)

    assert [report["epoch"] for report in reports] == [1, 2, 3]
    assert result.exit_code == 0
    assert result.user_time_s >= 0.2
    assert result.system_time_s >= 0
    assert result.total_time_s >= result.user_time_s * 0.5
    assert result.malformed_reports == ["this line is not JSON\n"]


def test_signal_death_is_named(tmp_path: Path):
    def kill_on_first(report):
        if report["epoch"] == 1:
            os.kill(pids[0], signal.SIGKILL)

    pids = []
    result = _run(tmp_path, 1000, kill_on_first, on_start=pids.append)

    assert result.exit_code == -signal.SIGKILL
    assert result.killed_by == "SIGKILL"


def test_failing_report_handler_stops_child(tmp_path: Path):
    def fail(report):
        raise RuntimeError("tracking server unreachable")

    pids = []
    with pytest.raises(RuntimeError, match="tracking server unreachable"):
        _run(tmp_path, 1000, fail, on_start=pids.append)

    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)
