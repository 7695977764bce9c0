"""Synchronous data-parallel training on Spark through Elephas, one averaging round per epoch.

The training process (src.worker) is the Spark driver. Each round broadcasts the current weights,
every partition of the cached training RDD trains one epoch from them with Elephas' SparkWorker,
and the driver subtracts the mean of the workers' weight changes. Elephas before 1.4.1 (0.4.5 in
the paper-era runtime) subtracts their sum instead, and its synchronous mode runs one round per
fit() call, so this module drives the rounds itself and only uses Elephas' per-partition worker.
After each round the driver validates the averaged model and sends the usual `epoch` report.

Imported by both runtimes (Python 3.11 with PySpark 4 and Elephas 7.3, Python 3.7 with PySpark 3.4
and Elephas 0.4.5), so it keeps to syntax and calls that both accept.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

# Spark job descriptions, which the REST API reports as each stage's `description`.
CACHE_JOB = "cache training data"
EPOCH_JOB = "train epoch {}"

# Variables of the training process that the executors' Python workers need too: the backend, the
# hidden GPUs, Theano's flags and compile cache, thread counts and the hash seed.
EXECUTOR_VARIABLES = (
    "KERAS_BACKEND",
    "CUDA_VISIBLE_DEVICES",
    "THEANO_FLAGS",
    "PYTHONHASHSEED",
    "OMP_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)

# Seconds to wait for Spark's status store to record the last finished stage before reading it.
STATUS_SETTLE_S = 10.0


class TopologyError(RuntimeError):
    """A Spark topology that cannot start or cannot train this data; the message names what to change."""


class SparkJobError(RuntimeError):
    """A Spark call that failed during training; the message is the first line of Spark's own error."""


def master_url(topology: dict) -> str:
    """Return the Spark master URL for the `topology` config group."""
    if topology["master"] == "local":
        return "local[{}]".format(topology["cores_per_executor"])
    if topology["master"] == "local-cluster":
        return "local-cluster[{},{},{}]".format(
            topology["executors"], topology["cores_per_executor"], topology["executor_memory_mb"]
        )
    return topology["master"]


def partition_count(topology: dict) -> int:
    """Return how many partitions the training set is split into: one per task slot unless configured."""
    return topology.get("partitions") or topology["executors"] * topology["cores_per_executor"]


def train_on_spark(keras, model, x_train, y_train, x_val, y_val, config: dict, reporter, scratch_root=None) -> None:
    """Train `model` (compiled) for config["epochs"] rounds on Spark, reporting each epoch and the Spark metrics.

    Spark starts here and stops before this returns or raises. Its metrics are read from the
    REST API before the context stops and sent as a `spark` report, also when training failed.
    """
    topology = config["topology"]
    partitions = partition_count(topology)
    smallest = len(x_train) // partitions
    if smallest <= config["batch_size"]:
        raise TopologyError(
            "{} training samples in {} partitions leave {} per partition, not more than batch_size={}, and "
            "Elephas trains no partition that small. Raise dataset.limit to at least {}, lower batch_size, or "
            "set topology.partitions lower.".format(
                len(x_train), partitions, smallest, config["batch_size"], partitions * (config["batch_size"] + 1)
            )
        )

    scratch = tempfile.mkdtemp(prefix="spark-driver-", dir=scratch_root)
    context = None
    try:
        context = _start_spark(topology, config, scratch)
        started_ms = context.startTime
        interruption = _Interruption(context)
        interrupted = False
        try:
            _train_rounds(
                context, keras, model, x_train, y_train, x_val, y_val, config, partitions, reporter, interruption
            )
        except KeyboardInterrupt:
            # The parent kills this process 10 s after SIGINT, so the running job is cancelled and
            # the metrics are read without waiting for the status store to settle.
            interrupted = True
            context.cancelAllJobs()
            raise
        except Exception as error:
            java_error = getattr(error, "java_exception", None)
            if java_error is None:
                raise
            # A Py4JJavaError's text is the whole Java stack trace. Its first line names the cause.
            cause = str(java_error).strip().splitlines()[0].rstrip(".")
            hint = "The executors' errors and Spark's log are in worker.log."
            if "stopped SparkContext" in cause:
                # Spark stops the context itself when no master accepts the application in time.
                hint = "Spark gave up on the master or the executors; check topology.master and worker.log."
            raise SparkJobError("Spark failed: {}. {}".format(cause, hint)) from error
        finally:
            interruption.uninstall()
            # Read before stop(): the REST API goes away with the context.
            metrics, details = _read_spark_metrics(context, settle_s=0.0 if interrupted else STATUS_SETTLE_S)
            context.stop()
            context = None
            metrics["spark_total_time_s"] = time.time() - started_ms / 1000.0
            reporter.send("spark", metrics=metrics, details=details)
    finally:
        if context is not None:
            context.stop()
        _copy_executor_logs(scratch)
        shutil.rmtree(scratch, ignore_errors=True)


def _start_spark(topology: dict, config: dict, scratch: str):
    from pyspark import SparkConf, SparkContext

    master = master_url(topology)
    # The executors' Python workers must run this interpreter, which has Elephas and the backend.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    if topology.get("driver_host"):
        # The driver's RPC endpoints, its web UI (with the REST API) and local-cluster's workers bind here.
        os.environ["SPARK_LOCAL_IP"] = topology["driver_host"]
    if topology["master"] in ("local", "local-cluster"):
        # Block manager and shuffle files of the driver and of local-cluster's executors go to this
        # run's scratch folder, removed at the end. (spark.local.dir would not reach the executors.)
        os.environ["SPARK_LOCAL_DIRS"] = os.path.join(scratch, "local")
    if topology["master"] == "local-cluster":
        os.environ["SPARK_HOME"] = _private_spark_home(scratch)

    conf = (
        SparkConf()
        .setMaster(master)
        .setAppName(
            "keras-backend-study {}/{} seed {}".format(
                config["dataset"]["name"], config["backend"]["name"], config["seed"]
            )
        )
    )
    for key, value in _spark_settings(topology).items():
        conf.set(key, value)
    for name in EXECUTOR_VARIABLES:
        if name in os.environ:
            conf.set("spark.executorEnv." + name, os.environ[name])

    try:
        context = SparkContext(conf=conf)
    except Exception as error:
        raise TopologyError(
            "Spark could not start with master {}: {}. Check that Java 17 runs (java -version), that the "
            "master URL is right and reachable, and that topology.executor_memory_mb fits in this "
            "machine's memory.".format(master, str(error).strip().splitlines()[0] if str(error).strip() else error)
        ) from error
    context.setLogLevel("WARN")
    return context


class _Interruption:
    """SIGINT handling for the driver while a SparkContext runs.

    PySpark's own SIGINT handler (set in SparkContext.__init__, PySpark 3.4 and 4) calls cancelAllJobs()
    on the main thread's py4j connection, which is still waiting for the running job's result. That
    call fails ("reentrant call") and no KeyboardInterrupt follows. This handler instead cancels the
    jobs from a new thread, which gets a py4j connection of its own. The job's call then returns its
    cancellation error, which `spark_call` turns into KeyboardInterrupt. Outside Spark calls the
    handler raises KeyboardInterrupt at once.

    NOTE: two gaps remain. A py4j call outside a `spark_call` block can still be interrupted
    half-way, which can leave its connection unusable. And a second SIGINT after uninstall() breaks
    off the reading of the metrics. Either way the run still ends KILLED, but without its Spark
    metrics. Wrapping every py4j call in `spark_call`, and ignoring SIGINT while the metrics are
    read, would close both.
    """

    def __init__(self, context):
        self.context = context
        self.requested = False
        self.in_spark_call = False
        signal.signal(signal.SIGINT, self._handle)

    def uninstall(self) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def _handle(self, signum, frame) -> None:
        self.requested = True
        if not self.in_spark_call:
            raise KeyboardInterrupt
        canceller = threading.Thread(target=self.context.cancelAllJobs, name="cancel-spark-jobs")
        canceller.daemon = True
        canceller.start()

    @contextlib.contextmanager
    def spark_call(self):
        """Mark a block of py4j calls that SIGINT must not break, and raise KeyboardInterrupt after it if requested."""
        if self.requested:
            raise KeyboardInterrupt
        self.in_spark_call = True
        try:
            yield
        except Exception as error:
            if self.requested:
                raise KeyboardInterrupt from error
            raise
        finally:
            self.in_spark_call = False
        if self.requested:
            raise KeyboardInterrupt


def _spark_settings(topology: dict) -> dict:
    memory = "{}m".format(topology["executor_memory_mb"])
    settings = {
        "spark.executor.memory": memory,
        "spark.executor.cores": str(topology["cores_per_executor"]),
        "spark.pyspark.python": sys.executable,
        "spark.ui.showConsoleProgress": "false",
        # A lost executor's task is retried on another one; a task that fails 4 times fails the run.
        "spark.task.maxFailures": "4",
    }
    if topology["master"] == "local":
        settings["spark.driver.memory"] = memory
    if topology["master"] not in ("local", "local-cluster"):
        settings["spark.executor.instances"] = str(topology["executors"])
        settings["spark.cores.max"] = str(topology["executors"] * topology["cores_per_executor"])
    if topology.get("driver_host"):
        settings["spark.driver.host"] = topology["driver_host"]
        settings["spark.driver.bindAddress"] = topology["driver_host"]
    return settings


def _private_spark_home(scratch: str) -> str:
    """Return a SPARK_HOME that mirrors the installed one but has a writable `work` folder of its own.

    local-cluster's workers write each executor's folder (its stdout and stderr) under
    $SPARK_HOME/work and offer no setting to move it. The pip-installed SPARK_HOME is inside the
    shared virtual environment, so each run links the installation's entries into a folder of its own.
    """
    import pyspark

    installed = os.environ.get("SPARK_HOME") or os.path.dirname(os.path.abspath(pyspark.__file__))
    home = os.path.join(scratch, "spark-home")
    os.makedirs(os.path.join(home, "work"))
    for entry in os.listdir(installed):
        if entry != "work":
            os.symlink(os.path.join(installed, entry), os.path.join(home, entry))
    return home


def _copy_executor_logs(scratch: str, max_lines: int = 200) -> None:
    """Append the end of each local-cluster executor's stderr to this process's stderr (the run's worker.log)."""
    work = os.path.join(scratch, "spark-home", "work")
    if not os.path.isdir(work):
        return
    for application in sorted(os.listdir(work)):
        for executor in sorted(os.listdir(os.path.join(work, application)), key=lambda name: (len(name), name)):
            path = os.path.join(work, application, executor, "stderr")
            if not os.path.isfile(path):
                continue
            with open(path, encoding="utf-8", errors="replace") as log_file:
                lines = log_file.readlines()[-max_lines:]
            sys.stderr.write(
                "----- executor {} of {}: last {} lines of stderr -----\n".format(executor, application, len(lines))
            )
            sys.stderr.writelines(lines)
    sys.stderr.flush()


def _train_rounds(
    context, keras, model, x_train, y_train, x_val, y_val, config, partitions, reporter, interruption
) -> None:
    with interruption.spark_call():
        context.setJobDescription(CACHE_JOB)
        samples = context.parallelize(list(zip(x_train, y_train)), numSlices=partitions).cache()
        samples.count()

    modern = keras.__version__.startswith("3.")
    train_config = {"epochs": 1, "batch_size": config["batch_size"], "verbose": 0, "validation_split": 0.0}
    weights = model.get_weights()
    for epoch in range(1, config["epochs"] + 1):
        started = time.perf_counter()
        with interruption.spark_call():
            parameters = context.broadcast(weights)
            elephas_worker = _elephas_worker(keras, model, parameters, train_config, config)
            trainer = _partition_trainer(elephas_worker, modern, config["seed"], epoch)
            context.setJobDescription(EPOCH_JOB.format(epoch))
            job_started = time.perf_counter()
            outcomes = samples.mapPartitionsWithIndex(trainer).collect()
            job_time_s = time.perf_counter() - job_started
            parameters.destroy()

        weights = subtract_mean_change(weights, [outcome["deltas"] for outcome in outcomes])
        model.set_weights(weights)
        val_loss, val_accuracy = model.evaluate(x_val, y_val, batch_size=config["batch_size"], verbose=0)
        epoch_time_s = time.perf_counter() - started

        trained = sum(outcome["samples"] for outcome in outcomes)
        train_loss = sum(outcome["loss"] * outcome["samples"] for outcome in outcomes) / trained
        train_accuracy = sum(outcome["accuracy"] * outcome["samples"] for outcome in outcomes) / trained
        reporter.send(
            "epoch",
            epoch=epoch,
            epoch_time_s=epoch_time_s,
            train_loss=float(train_loss),
            train_error=1.0 - float(train_accuracy),
            val_loss=float(val_loss),
            val_error=1.0 - float(val_accuracy),
            spark_job_time_s=job_time_s,
            driver_time_s=epoch_time_s - job_time_s,
        )


def subtract_mean_change(weights: list, changes: list) -> list:
    """Return `weights` minus the mean of the partitions' `changes`, layer by layer.

    Each change is the weights before minus the weights after a partition's epoch, as Elephas'
    SparkWorker returns it. Elephas 0.4.5 subtracts the sum instead, a step as many times too long
    as there are partitions.
    """
    import numpy as np

    return [
        weight - np.mean([change[index] for change in changes], axis=0).astype(weight.dtype)
        for index, weight in enumerate(weights)
    ]


def _elephas_worker(keras, model, parameters, train_config, config):
    """Return Elephas' synchronous SparkWorker for this model, built the way each Elephas version expects."""
    from elephas.worker import SparkWorker

    optimizer = keras.optimizers.serialize(model.optimizer)
    if keras.__version__.startswith("3."):
        # Elephas 7.3 rebuilds the model with model_from_json.
        architecture = model.to_json()
    else:
        # Elephas 0.4.5 rebuilds it with model_from_yaml.
        architecture = model.to_yaml()
    return SparkWorker(architecture, parameters, train_config, optimizer, config["loss"], ["accuracy"], {})


def _partition_trainer(elephas_worker, modern: bool, seed: int, epoch: int):
    """Return the function each task runs: seed, train one partition for one epoch, return the weight changes.

    A closure rather than a module-level function, so that Spark pickles it by value and the
    executors need Elephas and the backend but not this repository on their Python path.
    """

    def train_partition(index, rows):
        import random

        import numpy as np

        # Distinct per partition and epoch, and the same for the same seed, so that a run repeats.
        partition_seed = (seed * 1000003 + epoch * 1009 + index) % (2**32)
        random.seed(partition_seed)
        np.random.seed(partition_seed)
        import keras

        if hasattr(keras.utils, "set_random_seed"):
            keras.utils.set_random_seed(partition_seed)

        rows = list(rows)
        output = next(iter(elephas_worker.train(iter(rows))))
        if modern:
            # Elephas 7.3 returns [deltas, history], with history None when the partition did not train.
            deltas, history = output[0], output[1] or {}
        else:
            # Elephas 0.4.5 returns the deltas alone; Keras keeps the last fit's History on the model.
            deltas = output
            recorded = getattr(elephas_worker.model, "history", None)
            history = recorded.history if recorded is not None else {}
        accuracy = history.get("accuracy", history.get("acc", [float("nan")]))
        yield {
            "partition": index,
            "samples": len(rows),
            "deltas": deltas,
            "loss": float(history.get("loss", [float("nan")])[-1]),
            "accuracy": float(accuracy[-1]),
        }

    return train_partition


def _read_spark_metrics(context, settle_s: float):
    """Return (metrics, details) from the driver's REST API: stage and task summaries, executors.

    A training failure must still be reported, so any Exception from the API becomes an `error`
    entry in the details (the tag spark.metrics_error) and the metrics it would have given are left out.
    """
    try:
        return _query_spark_metrics(context, settle_s)
    except Exception as error:  # the metrics are a record, not a reason to hide the run's outcome
        return {}, {"error": "{}: {}".format(type(error).__name__, error)}


def _query_spark_metrics(context, settle_s: float):
    import urllib.request

    # Loopback or the cluster's driver address: never through an HTTP proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    base = "{}/api/v1/applications/{}".format(context.uiWebUrl.rstrip("/"), context.applicationId)

    def get(path):
        with opener.open(base + path, timeout=30) as response:
            return json.loads(response.read().decode("utf-8"))

    # The status store is updated from an event queue, so the last stage can lag behind collect().
    deadline = time.time() + settle_s
    stages = get("/stages")
    while any(stage["status"] == "ACTIVE" for stage in stages) and time.time() < deadline:
        time.sleep(0.2)
        stages = get("/stages")

    stage_records = []
    tasks = []
    for stage in sorted(stages, key=lambda item: (item["stageId"], item["attemptId"])):
        path = "/stages/{}/{}".format(stage["stageId"], stage["attemptId"])
        summary = get(path + "/taskSummary?quantiles=0.5") if stage["numCompleteTasks"] else {}
        # taskList returns 20 tasks unless asked for more.
        stage_tasks = get(path + "/taskList?length={}".format(max(stage["numTasks"] * 10, 1000)))
        stage_records.append(
            {
                "stage_id": stage["stageId"],
                "attempt": stage["attemptId"],
                "description": stage.get("description", ""),
                "status": stage["status"],
                "tasks": stage["numTasks"],
                "complete_tasks": stage["numCompleteTasks"],
                "failed_tasks": stage["numFailedTasks"],
                "executor_run_time_ms": stage.get("executorRunTime"),
                "jvm_gc_time_ms": stage.get("jvmGcTime"),
                "task_run_time_median_ms": _median_of(summary, "executorRunTime"),
                "task_gc_time_median_ms": _median_of(summary, "jvmGcTime"),
            }
        )
        for task in stage_tasks:
            task_metrics = task.get("taskMetrics") or {}
            tasks.append(
                {
                    "stage_id": stage["stageId"],
                    "task_id": task["taskId"],
                    "partition": task["index"],
                    "attempt": task["attempt"],
                    "executor": task.get("executorId"),
                    "status": task["status"],
                    "duration_ms": task.get("duration"),
                    "executor_run_time_ms": task_metrics.get("executorRunTime"),
                    "jvm_gc_time_ms": task_metrics.get("jvmGcTime"),
                    "error": (task.get("errorMessage") or "").splitlines()[0] if task.get("errorMessage") else "",
                }
            )

    executors = [executor for executor in get("/allexecutors") if executor["id"] != "driver"]
    if not executors:
        # local[N] runs its tasks in the driver, which is then the one executor.
        executors = [executor for executor in get("/allexecutors") if executor["id"] == "driver"]
    active = [executor for executor in executors if executor["isActive"]]

    training = [
        record
        for record in stage_records
        if record["description"].startswith("train epoch") and record["task_run_time_median_ms"] is not None
    ]
    metrics = {
        "spark_tasks": float(len(tasks)),
        "spark_failed_tasks": float(sum(1 for task in tasks if task["status"] not in ("SUCCESS", "RUNNING"))),
        "spark_stages": float(len(stage_records)),
        "spark_executors": float(len(active)),
        "spark_executors_lost": float(len(executors) - len(active)),
        "spark_cores": float(sum(executor["totalCores"] for executor in active)),
        "spark_task_time_total_s": sum(task["executor_run_time_ms"] or 0 for task in tasks) / 1000.0,
    }
    if training:
        metrics["spark_task_time_median_ms"] = _mean(record["task_run_time_median_ms"] for record in training)
        metrics["spark_gc_time_median_ms"] = _mean(record["task_gc_time_median_ms"] for record in training)

    details = {
        "master": context.master,
        "application_id": context.applicationId,
        "spark_version": context.version,
        "stages": stage_records,
        "tasks": tasks,
        "executors": [
            {
                "id": executor["id"],
                "host_port": executor.get("hostPort"),
                "active": executor["isActive"],
                "cores": executor["totalCores"],
                "tasks": executor.get("totalTasks"),
                "failed_tasks": executor.get("failedTasks"),
                "run_time_ms": executor.get("totalDuration"),
                "gc_time_ms": executor.get("totalGCTime"),
                "max_memory_bytes": executor.get("maxMemory"),
                "remove_reason": executor.get("removeReason", ""),
            }
            for executor in executors
        ],
    }
    return metrics, details


def _median_of(summary, name):
    values = summary.get(name) if summary else None
    return float(values[0]) if values else None


def _mean(values):
    values = list(values)
    return sum(values) / len(values)
