"""Entry point of the MLproject's `main`: `python -m src.mlproject "OVERRIDES"`.

`mlflow run -P overrides="dataset=mnist epochs=2"` hands the parameter over as a single
shell-quoted argument, which Hydra would read as one malformed override. This splits it the way a
shell would and then runs src.train exactly as the command line does.
"""

from __future__ import annotations

import shlex
import sys

from src.train import run_command_line

if __name__ == "__main__":
    run_command_line([sys.argv[0], *(part for argument in sys.argv[1:] for part in shlex.split(argument))])
