"""Checks on the `topology` group: a Spark layout that cannot start is rejected before any run exists."""

from __future__ import annotations

import os
import re
import shutil
import socket
from typing import Any

from omegaconf import DictConfig

# Spark (UnifiedMemoryManager, 3.4 and 4.0) rejects executors below 450 MiB: 300 MiB reserved times
# 1.5. 512 leaves a little room.
MIN_EXECUTOR_MEMORY_MB = 512

SIMULATED_MASTERS = ("local", "local-cluster")
CLUSTER_MASTER_PATTERNS = (
    re.compile(r"^spark://[^:/,]+:\d+(,[^:/,]+:\d+)*$"),
    re.compile(r"^yarn$"),
    re.compile(r"^k8s://https?://\S+$"),
)


def topology_problems(cfg: DictConfig) -> list[str]:
    """Return one message per invalid topology key, and one when Java is missing; empty for single."""
    topology = cfg.topology
    if topology.name == "single":
        return []

    problems = []
    master = topology.get("master")
    if master is None:
        problems.append(
            "topology.master=null is invalid: topology={} needs the master URL of a running cluster, for "
            "example topology.master=spark://HOST:7077, yarn or k8s://https://HOST:6443.".format(topology.name)
        )
    elif master not in SIMULATED_MASTERS and not any(pattern.match(str(master)) for pattern in CLUSTER_MASTER_PATTERNS):
        problems.append(
            "topology.master={} is invalid: expected local, local-cluster, spark://HOST:PORT, yarn or "
            "k8s://https://HOST:PORT.".format(master)
        )

    for key, minimum in (("executors", 1), ("cores_per_executor", 1), ("executor_memory_mb", MIN_EXECUTOR_MEMORY_MB)):
        value = topology.get(key)
        if not _is_whole(value) or value < minimum:
            problems.append("topology.{}={} is invalid: expected a whole number >= {}.".format(key, value, minimum))
    partitions = topology.get("partitions")
    if partitions is not None and (not _is_whole(partitions) or partitions < 1):
        problems.append("topology.partitions={} is invalid: expected a whole number >= 1 or null.".format(partitions))
    if master == "local" and topology.get("executors") != 1:
        problems.append(
            "topology.executors={} is invalid with topology.master=local, which runs one executor inside the "
            "driver: use executors=1, or master=local-cluster for separate executor JVMs.".format(
                topology.get("executors")
            )
        )

    if not problems:
        partition_problem = small_partitions(cfg)
        if partition_problem:
            problems.append(partition_problem)
        master_problem = unreachable_master(str(master))
        if master_problem:
            problems.append(master_problem)

    java_problem = missing_java()
    if java_problem:
        problems.append(java_problem)
    return problems


def small_partitions(cfg: DictConfig) -> str | None:
    """Return why the training set's partitions are too small for Elephas to train, or None.

    Elephas trains no partition that has at most batch_size samples. The sizes come from the config:
    dataset.train_size (the full training split), dataset.limit and the holdout share, computed as
    src.data.arrays.build_splits does. A dataset without train_size is checked when training starts.
    """
    full = cfg.dataset.get("train_size")
    limit = cfg.dataset.get("limit")
    batch_size = cfg.get("batch_size")
    if not _is_whole(full) or not _is_whole(batch_size) or (limit is not None and not _is_whole(limit)):
        return None

    samples = min(full, limit) if limit is not None else full
    if cfg.validation.split == "holdout":
        samples -= max(1, round(samples * cfg.validation.fraction))
    partitions = cfg.topology.get("partitions") or cfg.topology.executors * cfg.topology.cores_per_executor
    smallest = samples // partitions
    if smallest > batch_size:
        return None
    return (
        "topology={} splits {} training samples into {} partitions of {} or fewer, not more than batch_size={}, "
        "and Elephas trains no partition that small. Raise dataset.limit so that at least {} samples train, "
        "lower batch_size, or set topology.partitions lower.".format(
            cfg.topology.name, samples, partitions, smallest, batch_size, partitions * (batch_size + 1)
        )
    )


def unreachable_master(master: str) -> str | None:
    """Return why Spark could not reach a cluster master, found before any run exists, or None.

    Without this, a spark:// master that nothing listens on fails the run only after Spark's
    registration retries (about a minute), and YARN without its config folder fails with
    "Java gateway process exited", the real cause only in worker.log.
    """
    if master == "yarn":
        if os.environ.get("HADOOP_CONF_DIR") or os.environ.get("YARN_CONF_DIR"):
            return None
        return (
            "topology.master=yarn needs HADOOP_CONF_DIR or YARN_CONF_DIR, the folder with yarn-site.xml that "
            "names the ResourceManager, and neither is set. Set one, or use a spark:// master."
        )
    if not master.startswith("spark://"):
        return None

    failures = []
    for address in master[len("spark://") :].split(","):
        host, port = address.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
            return None
        except OSError as error:
            failures.append("{}: {}".format(address, error.strerror or error))
    return (
        "topology.master={} is not reachable ({}). Start the Spark master (sbin/start-master.sh), or correct "
        "the host and port; the master's web UI shows its spark:// URL.".format(master, "; ".join(failures))
    )


def missing_java() -> str | None:
    """Return why Spark would find no `java` (JAVA_HOME first, then PATH, as spark-submit looks), or None."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        if os.access(os.path.join(java_home, "bin", "java"), os.X_OK):
            return None
        return (
            "JAVA_HOME={} has no bin/java, so Spark cannot start. Point JAVA_HOME at a Java 17 installation, "
            "or unset it to use the java on PATH.".format(java_home)
        )
    if shutil.which("java"):
        return None
    return (
        "Spark needs Java 17 but no `java` is on PATH and JAVA_HOME is unset. Install it "
        "(apt-get install openjdk-17-jre-headless) or set JAVA_HOME, or use topology=single."
    )


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
