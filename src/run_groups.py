"""Training runs read back from MLflow and grouped by configuration (the `config_id` tag)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from mlflow.entities import Run

# Tag that marks a comparison run, so that queries for training runs leave it out.
RUN_TYPE_TAG = "run_type"
COMPARISON_RUN_TYPE = "comparison"

# Skip reason of a FINISHED run that a newer FINISHED run of the same config_id and seed replaces.
SUPERSEDED = "superseded"

# Tags that a `python -m src.compare KEY=VALUE` filter may name.
FILTER_TAGS = ("dataset", "backend", "device", "topology", "model", "config_id")

# Params that do not change what a run computes, and `backend.*`, left out of the key that pairs a
# configuration with the same one on another backend.
PAIRING_EXCLUDED_PREFIXES = (
    "backend.",
    "seed",
    "repeats",
    "progress",
    "tracking.",
    "cache_dir",
    "dataset.dir",
    "dataset.urls",
)


@dataclass
class RunGroup:
    """The FINISHED repeats of one configuration and what they recorded."""

    config_id: str
    runs: list[Run]
    label: str = ""
    curves: list[list[float]] = field(default_factory=list)

    @property
    def tags(self) -> dict[str, str]:
        return self.runs[0].data.tags

    @property
    def params(self) -> dict[str, str]:
        return self.runs[0].data.params

    def tag(self, name: str) -> str:
        return self.tags.get(name, "")

    def values(self, metric: str) -> list[float]:
        """Return the metric's latest value in each run that logged it."""
        return [run.data.metrics[metric] for run in self.runs if metric in run.data.metrics]

    def pairing_key(self) -> tuple[tuple[str, str], ...]:
        """Return every param that shapes the result except the backend's, to find the same set-up on other backends."""
        setting = {
            key: value
            for key, value in self.params.items()
            if not any(key == prefix or key.startswith(prefix) for prefix in PAIRING_EXCLUDED_PREFIXES)
        }
        setting["device"] = self.tag("device")
        setting["topology"] = self.tag("topology")
        setting["model"] = self.tag("model")
        return tuple(sorted(setting.items()))


@dataclass
class RunSelection:
    """Training runs of an experiment that match the filters, and what was left out."""

    finished: list[Run]
    skipped_by_status: Counter
    comparison_runs: int
    # Older FINISHED runs of a (config_id, seed) that a newer FINISHED run of the same seed replaces.
    superseded: list[Run] = field(default_factory=list)


def is_comparison_run(run: Run) -> bool:
    return run.data.tags.get(RUN_TYPE_TAG) == COMPARISON_RUN_TYPE


def select_runs(runs: list[Run], filters: dict[str, list[str]]) -> RunSelection:
    """Keep the FINISHED training runs whose tags match every filter; count the others by status.

    A rerun of one seed is not a new repeat, so only the newest FINISHED run of each (config_id,
    seed) is kept, and the older ones are counted as "superseded". Runs without a `config_id` tag
    (started by other tools) and comparison runs are not training runs of this suite and are left
    out without being counted as skipped.
    """
    finished: list[Run] = []
    skipped: Counter = Counter()
    comparisons = 0
    for run in runs:
        if is_comparison_run(run):
            comparisons += 1
            continue
        if "config_id" not in run.data.tags:
            continue
        if not all(run.data.tags.get(key) in allowed for key, allowed in filters.items()):
            continue
        if run.info.status == "FINISHED":
            finished.append(run)
        else:
            skipped[run.info.status] += 1

    newest: dict[tuple[str, str], Run] = {}
    superseded: list[Run] = []
    for run in sorted(finished, key=lambda run: run.info.start_time or 0, reverse=True):
        key = (run.data.tags["config_id"], run.data.params.get("seed", ""))
        if key in newest:
            superseded.append(run)
        else:
            newest[key] = run
    superseded_ids = {run.info.run_id for run in superseded}
    compared = [run for run in finished if run.info.run_id not in superseded_ids]
    if superseded:
        skipped[SUPERSEDED] = len(superseded)
    return RunSelection(compared, skipped, comparisons, superseded)


def group_runs(runs: list[Run]) -> list[RunGroup]:
    """Group runs by `config_id` and give each group a readable label that is unique in the list."""
    by_id: dict[str, list[Run]] = {}
    for run in runs:
        by_id.setdefault(run.data.tags["config_id"], []).append(run)
    groups = [RunGroup(config_id, sorted(members, key=_seed)) for config_id, members in by_id.items()]
    _label_groups(groups)
    groups.sort(key=lambda group: (group.tag("dataset"), group.tag("device"), group.tag("topology"), group.label))
    return groups


def _seed(run: Run) -> int:
    seed = run.data.params.get("seed", "0")
    return int(seed) if seed.isdigit() else 0


def _label_groups(groups: list[RunGroup]) -> None:
    """Label each group with its `config_name`, the model where models differ, the id where still ambiguous."""
    models_differ = len({group.tag("model") for group in groups}) > 1
    for group in groups:
        group.label = group.tag("config_name") or group.config_id
        if models_differ:
            group.label += " " + group.tag("model")

    counts = Counter(group.label for group in groups)
    for group in groups:
        if counts[group.label] > 1:
            group.label += " [{}]".format(group.config_id)
