"""`python -m src.data.fetch [DATASET ...]`: make sure datasets are on disk and verified.

Uses the same search order and checks as a training run (see src.data.sources) and the settings
in conf/dataset/DATASET.yaml, so a dataset this command accepts is one a run will accept.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

from src.data.sources import DatasetError, locate_dataset

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf" / "dataset"


def main(argv: list[str] | None = None) -> int:
    choices = sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", default=["mnist", "fmnist"], help="any of: " + ", ".join(choices))
    parser.add_argument("--cache-dir", default=None, help="download folder (default: the suite's cache)")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    failures = 0
    for name in arguments.datasets:
        if name not in choices:
            print("Error: {} is not a dataset; choose one of: {}.".format(name, ", ".join(choices)), file=sys.stderr)
            failures += 1
            continue
        try:
            located = locate_dataset(OmegaConf.load(CONFIG_DIR / (name + ".yaml")), arguments.cache_dir)
        except DatasetError as error:
            print("Error: {}".format(error), file=sys.stderr)
            failures += 1
            continue
        print("{}: verified, from {}".format(name, located.source))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
