"""`python -m src.ui [--port N]`: open the MLflow UI on 127.0.0.1 for the suite's tracking store."""

from __future__ import annotations

import argparse
import os
import sys

from src.tracking import resolve_tracking_uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=5000, help="TCP port on 127.0.0.1 (default 5000)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; anything else exposes the store to the network)",
    )
    arguments = parser.parse_args(argv)

    uri = resolve_tracking_uri(None)
    if uri.startswith(("http://", "https://")):
        print("MLFLOW_TRACKING_URI points at a tracking server; open {} in a browser.".format(uri))
        return 0
    print(
        "Starting the MLflow UI for {} at http://{}:{}/ . It can take a minute to answer on a small "
        "machine; Ctrl-C stops it.".format(uri, arguments.host, arguments.port),
        flush=True,
    )
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    command = [mlflow, "ui", "--backend-store-uri", uri, "--host", arguments.host, "--port", str(arguments.port)]
    os.execv(mlflow, command)  # noqa: S606 - replaces this process with the MLflow UI, fixed arguments
    return 0


if __name__ == "__main__":
    sys.exit(main())
