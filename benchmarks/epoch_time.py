"""Per-epoch training time of the backends, measured side by side in one invocation.

    python benchmarks/epoch_time.py [--epochs 3] [--dataset mnist] [--limit N] [--backends a,b,...]

Runs `python -m src.train -m backend=tensorflow,jax,torch,tensorflow1,theano` (or --backends) with
one seed into a temporary
MLflow store, so the backends run one after the other on the same machine. It prints, per backend,
the median epoch time without the first epoch, the compile time, the three process times, and the
ratio of median epoch times to the first backend listed. The first epoch is left out of the median
because it includes one-time work: TensorFlow traces its graph there, while Theano compiles before
fit and reports that as compile_time_s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY_ROOT))

from src.tracking import connect  # noqa: E402 - needs the repository on sys.path

BACKENDS = ("tensorflow", "jax", "torch", "tensorflow1", "theano")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per backend (>= 2; default 3)")
    parser.add_argument("--dataset", default="mnist", help="mnist, fmnist or cifar10 (default mnist)")
    parser.add_argument("--limit", type=int, default=None, help="training samples (default: all)")
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated, first is the reference (default: all five)"
    )
    arguments = parser.parse_args()
    if arguments.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is left out of the median")

    with tempfile.TemporaryDirectory(prefix="epoch-time-") as scratch:
        uri = "sqlite:///{}".format(Path(scratch) / "mlflow.db")
        overrides = [
            "-m",
            "backend={}".format(arguments.backends),
            "dataset={}".format(arguments.dataset),
            "epochs={}".format(arguments.epochs),
            "seed=0",
            "tracking.uri={}".format(uri),
            "hydra.sweep.dir={}".format(Path(scratch) / "sweep"),
        ]
        if arguments.limit:
            overrides.append("dataset.limit={}".format(arguments.limit))
        subprocess.run([sys.executable, "-m", "src.train", *overrides], cwd=REPOSITORY_ROOT, check=True)
        rows = _collect(uri)

    _print_table(rows, arguments)
    return 0


def _collect(uri: str) -> dict[str, dict]:
    client = connect(uri)
    experiment = client.get_experiment_by_name("paper-cnn-backends")
    rows = {}
    for run in client.search_runs([experiment.experiment_id]):
        epochs = [
            point.value
            for point in sorted(client.get_metric_history(run.info.run_id, "epoch_time_s"), key=lambda p: p.step)
        ]
        rows[run.data.tags["backend"]] = {
            "median_epoch_s": statistics.median(epochs[1:]),
            "first_epoch_s": epochs[0],
            "compile_s": run.data.metrics.get("compile_time_s", 0.0),
            "user_s": run.data.metrics["user_time_s"],
            "system_s": run.data.metrics["system_time_s"],
            "total_s": run.data.metrics["total_time_s"],
            "val_error": client.get_metric_history(run.info.run_id, "val_error")[-1].value,
        }
    return rows


def _print_table(rows: dict[str, dict], arguments: argparse.Namespace) -> None:
    backends = arguments.backends.split(",")
    reference = rows[backends[0]]["median_epoch_s"]
    print()
    print("dataset={} epochs={} limit={}".format(arguments.dataset, arguments.epochs, arguments.limit or "all"))
    header = "{:<12} {:>10} {:>10} {:>9} {:>8} {:>8} {:>8} {:>9} {:>10}".format(
        "backend", "epoch s", "1st ep s", "compile", "user s", "sys s", "total s", "val_err", "ratio"
    )
    print("ratio: median epoch time over that of {}".format(backends[0]))
    print(header)
    for backend in backends:
        row = rows[backend]
        print(
            "{:<12} {:>10.2f} {:>10.2f} {:>9.2f} {:>8.1f} {:>8.1f} {:>8.1f} {:>9.4f} {:>10.2f}".format(
                backend,
                row["median_epoch_s"],
                row["first_epoch_s"],
                row["compile_s"],
                row["user_s"],
                row["system_s"],
                row["total_s"],
                row["val_error"],
                row["median_epoch_s"] / reference,
            )
        )


if __name__ == "__main__":
    sys.exit(main())
