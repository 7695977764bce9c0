"""`epochs=auto`: the epoch count that the latest comparison selected for a dataset and backend.

The selection comes from the single-machine (topology=single) runs only, so Spark runs reuse the
count that the single-machine curves chose, as the reproduced study did.

`python -m src.compare` records its selection as tags of its comparison run, one tag per dataset
and backend (`epochs_selected.mnist.theano` = "12"); `python -m src.train epochs=auto` reads the
newest such tag in the same experiment.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from src.config import ConfigError
from src.run_groups import COMPARISON_RUN_TYPE, RUN_TYPE_TAG
from src.tracking import connect, resolve_tracking_uri

AUTO = "auto"
TAG_PREFIX = "epochs_selected."


def selection_tag(dataset: str, backend: str) -> str:
    return "{}{}.{}".format(TAG_PREFIX, dataset, backend)


def resolve_auto_epochs(cfg: DictConfig) -> str | None:
    """Replace `epochs=auto` in `cfg` by the latest recorded selection; return the comparison run's id.

    Returns None and leaves `cfg` alone when epochs is not `auto`. Raises ConfigError when no
    comparison in the experiment has selected an epoch count for this dataset and backend. Reads
    the store only: it creates no store, experiment or run.
    """
    if cfg.epochs != AUTO:
        return None

    dataset, backend = cfg.dataset.name, cfg.backend.name
    tracking_uri = resolve_tracking_uri(cfg.tracking.uri)
    experiment_name = cfg.tracking.experiment_name
    hint = (
        "Run the single-machine repeats and then `python -m src.compare dataset={} backend={}` to record one, "
        "or set epochs to a whole number.".format(dataset, backend)
    )
    missing = (
        "epochs=auto found no epoch count selected for dataset={} backend={} from single-machine (topology=single) "
        "runs in experiment '{}' at {}: {}".format(dataset, backend, experiment_name, tracking_uri, "{}")
    )

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///") :]).exists():
        raise ConfigError(missing.format("the store does not exist. " + hint))
    client = connect(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise ConfigError(missing.format("the experiment does not exist. " + hint))

    tag = selection_tag(dataset, backend)
    comparisons = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.{} = '{}'".format(RUN_TYPE_TAG, COMPARISON_RUN_TYPE),
        order_by=["attributes.start_time DESC"],
    )
    for run in comparisons:
        if tag in run.data.tags:
            cfg.epochs = int(run.data.tags[tag])
            return run.info.run_id
    raise ConfigError(missing.format("no comparison run carries the tag {}. ".format(tag) + hint))
