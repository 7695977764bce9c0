"""End to end: a real multirun of two backends on an MNIST subset, `python -m src.compare` on it,
`epochs=auto` resolved from its record, and the MLflow UI showing it all in headless Chromium."""

from __future__ import annotations

import csv
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import EXPERIMENT, REPOSITORY_ROOT, run_cli, runs_in
from mlflow.tracking import MlflowClient

from src.run_groups import is_comparison_run

pytestmark = pytest.mark.slow

BACKENDS = ("tensorflow", "tensorflow1")
SCREENSHOTS = REPOSITORY_ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Compared:
    """The store, the multirun's training runs and what `python -m src.compare` made of them."""

    def __init__(self, tracking_uri: str, env: dict, output: Path, result: subprocess.CompletedProcess, tmp: Path):
        self.tracking_uri = tracking_uri
        self.env = env
        self.output = output
        self.result = result
        self.tmp = tmp
        runs = runs_in(tracking_uri)
        self.training_runs = [run for run in runs if not is_comparison_run(run)]
        self.comparison_runs = [run for run in runs if is_comparison_run(run)]


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> Compared:
    tmp = tmp_path_factory.mktemp("compare-e2e")
    tracking_uri = "sqlite:///{}".format(tmp / "store" / "mlflow.db")
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri, XDG_CACHE_HOME=str(tmp / "cache"))
    env.pop("HYDRA_FULL_ERROR", None)

    overrides = ["-m", "backend={}".format(",".join(BACKENDS)), "dataset.limit=2000", "epochs=2", "repeats=2"]
    train = run_cli(overrides, env, tmp / "sweep", timeout=900)
    assert train.returncode == 0, train.stderr

    output = tmp / "comparison"
    result = subprocess.run(
        [sys.executable, "-m", "src.compare", "dataset=mnist", "--output", str(output)],
        cwd=REPOSITORY_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return Compared(tracking_uri, env, output, result, tmp)


def _csv(path: Path) -> list[dict]:
    with open(path) as stream:
        return list(csv.DictReader(stream))


def test_compare_prints_table_of_both_backends(compared: Compared):
    printed = compared.result.stdout

    assert "4 FINISHED training runs compared (filters: dataset=mnist; skipped: none)" in printed
    for backend in BACKENDS:
        assert re.search(r"mnist/{}/cpu/single\s+2\s+2\s+2000".format(backend), printed), printed
    assert "Backend against backend" in printed
    assert re.search(r"tensorflow\s+tensorflow1\s+total_time_s", printed), printed


def test_summary_matches_the_runs_in_the_store(compared: Compared):
    summary = _csv(compared.output / "summary.csv")

    for backend in BACKENDS:
        runs = [run for run in compared.training_runs if run.data.tags["backend"] == backend]
        assert len(runs) == 2
        for metric in ("user_time_s", "total_time_s", "test_error"):
            (row,) = [row for row in summary if row["backend"] == backend and row["metric"] == metric]
            expected = sum(run.data.metrics[metric] for run in runs) / 2
            assert row["n"] == "2"
            assert float(row["mean"]) == pytest.approx(expected)
            assert float(row["ci95_low"]) <= float(row["mean"]) <= float(row["ci95_high"])

    pairs = _csv(compared.output / "pairs.csv")
    assert {row["metric"] for row in pairs} == {
        "user_time_s",
        "system_time_s",
        "total_time_s",
        "val_error",
        "test_error",
    }
    assert all(row["backend_a"] == "tensorflow" and row["backend_b"] == "tensorflow1" for row in pairs)


def test_report_files_open_offline(compared: Compared):
    figures = sorted((compared.output / "figures").glob("*.png"))
    page = (compared.output / "report.html").read_text()

    assert [figure.name for figure in figures] == [
        "times_mnist_cpu_single.png",
        "val_error_mnist_cpu_single_all_epochs.png",
    ]
    assert page.count("src='data:image/png;base64,") == len(figures)
    # Nothing the page would fetch: no external scripts, styles or images.
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page)
    assert "<script" not in page
    assert "| mnist/tensorflow/cpu/single | 2 | 2 | 2000 |" in (compared.output / "comparison.md").read_text()


def _launch_chromium(driver, profile: str):
    return driver.chromium.launch_persistent_context(
        profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, viewport={"width": 1600, "height": 1000}
    )


def test_report_renders_offline_in_chromium(compared: Compared):
    playwright = pytest.importorskip("playwright.sync_api")

    with playwright.sync_playwright() as driver, tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        browser = _launch_chromium(driver, profile)
        browser.set_offline(True)
        page = browser.new_page()
        page.goto((compared.output / "report.html").as_uri())

        playwright.expect(page.get_by_role("heading", name="Backend against backend")).to_be_visible()
        widths = page.eval_on_selector_all("img", "images => images.map(image => image.naturalWidth)")
        assert len(widths) == 2
        assert all(width > 0 for width in widths)
        browser.close()


def test_comparison_run_records_selection_and_files(compared: Compared):
    (comparison,) = compared.comparison_runs
    client = MlflowClient(tracking_uri=compared.tracking_uri)

    assert comparison.info.status == "FINISHED"
    assert comparison.info.experiment_id == compared.training_runs[0].info.experiment_id
    assert "config_id" not in comparison.data.tags
    assert comparison.data.params["training_runs"] == "4"
    assert comparison.data.params["filters"] == "dataset=mnist"
    selected = {row["backend"]: row["selected_epochs"] for row in _csv(compared.output / "epochs.csv")}
    for backend in BACKENDS:
        assert comparison.data.tags["epochs_selected.mnist.{}".format(backend)] == selected[backend]
        assert selected[backend] in ("1", "2")
    artifacts = {item.path for item in client.list_artifacts(comparison.info.run_id)}
    assert {"report.html", "comparison.md", "summary.csv", "pairs.csv", "epochs.csv", "figures"} <= artifacts


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_server(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "mlflow ui exited with code {}".format(server.returncode)
        try:
            with urllib.request.urlopen(url + "/health", timeout=5):  # noqa: S310 - a fixed http URL on 127.0.0.1
                return
        except OSError:
            time.sleep(1)
    pytest.fail("mlflow ui did not answer at {} within {} s".format(url, timeout))


def test_mlflow_ui_shows_groups_and_comparison(compared: Compared):
    playwright = pytest.importorskip("playwright.sync_api")
    (comparison,) = compared.comparison_runs
    experiment_id = comparison.info.experiment_id
    config_ids = sorted({run.data.tags["config_id"] for run in compared.training_runs})
    SCREENSHOTS.mkdir(exist_ok=True)

    port = _free_port()
    url = "http://127.0.0.1:{}".format(port)
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [
        str(mlflow),
        "ui",
        "--backend-store-uri",
        compared.tracking_uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with open(compared.tmp / "mlflow-ui.log", "w") as server_log:
        server = subprocess.Popen(command, stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_server(url, server)
        with playwright.sync_playwright() as driver, tempfile.TemporaryDirectory(prefix="chromium-") as profile:
            browser = _launch_chromium(driver, profile)
            page = browser.new_page()
            expect = playwright.expect

            # MLflow 3.17 opens experiments in its GenAI view unless the browser chose "Model training".
            page.goto("{}/#/experiments/{}/runs?workflowType=machine_learning".format(url, experiment_id))
            expect(page.get_by_text(comparison.info.run_name)).to_be_visible(timeout=60_000)

            page.get_by_role("button", name=re.compile("Group by")).click()
            page.get_by_role("menuitemcheckbox", name="config_id", exact=True).click()
            page.keyboard.press("Escape")
            for config_id in config_ids:
                expect(page.get_by_text("Group: {}".format(config_id))).to_be_visible(timeout=30_000)
            page.screenshot(path=str(SCREENSHOTS / "mlflow-ui-grouped-runs.png"))

            # The chart view of the grouped runs: one aggregated val_error line per configuration.
            # The view draws only the charts in sight, so the search box narrows them to val_error.
            page.goto(page.url + "&compareRunsMode=CHART")
            page.get_by_placeholder("Search metric charts").fill("val_error")
            for config_id in config_ids:
                legend = page.get_by_text("{} (val_error)".format(config_id), exact=True)
                expect(legend).to_be_visible(timeout=60_000)
            page.screenshot(path=str(SCREENSHOTS / "mlflow-ui-grouped-charts.png"))

            artifacts = "{}/#/experiments/{}/runs/{}/artifacts?workflowType=machine_learning"
            page.goto(artifacts.format(url, experiment_id, comparison.info.run_id))
            expect(page.get_by_text("report.html", exact=True)).to_be_visible(timeout=60_000)
            expect(page.get_by_text("figures", exact=True)).to_be_visible()
            expect(page.get_by_text("summary.csv", exact=True)).to_be_visible()
            # The UI previews the report in a frame.
            page.get_by_text("report.html", exact=True).click()
            report = page.frame_locator("iframe").first
            expect(report.get_by_text("Backend against backend")).to_be_visible(timeout=30_000)
            page.screenshot(path=str(SCREENSHOTS / "mlflow-ui-comparison-artifacts.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_auto_epochs_trains_the_selected_count(compared: Compared):
    (comparison,) = compared.comparison_runs
    selected = comparison.data.tags["epochs_selected.mnist.tensorflow"]

    result = run_cli(["epochs=auto", "dataset.limit=500", "seed=7"], compared.env, compared.tmp / "auto")

    assert result.returncode == 0, result.stderr
    (run,) = [run for run in runs_in(compared.tracking_uri) if run.data.params.get("seed") == "7"]
    assert run.data.params["epochs"] == selected
    assert run.data.tags["epochs_selected_by"] == comparison.info.run_id
    assert run.data.tags["hydra.overrides"].startswith("epochs=auto")


def test_auto_epochs_without_record_fails_before_any_run(compared: Compared):
    before = len(runs_in(compared.tracking_uri, EXPERIMENT))
    result = run_cli(["epochs=auto", "backend=theano", "dataset.limit=500"], compared.env, compared.tmp / "none")

    assert result.returncode == 2
    assert "Error: epochs=auto found no epoch count selected for dataset=mnist backend=theano" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(runs_in(compared.tracking_uri, EXPERIMENT)) == before
