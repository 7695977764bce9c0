"""The training process: trains one run and reports to the Hydra job, printing only Keras' progress.

Started by src.runner as `python -m src.worker SPEC.json` with the backend already chosen through
the environment (KERAS_BACKEND, CUDA_VISIBLE_DEVICES), because Keras reads it at import time.
Reports are JSON objects, one per line, written to the file descriptor named by
WORKER_REPORT_FD; stdout carries only the Keras progress bar. The parent measures this process's
CPU and wall time from outside, so everything here, imports included, counts towards the run.

Runs under Python 3.11 with Keras 3 and under the paper-era Python 3.7 with Keras 2.2.5, so it
uses only syntax and Keras calls that both accept.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
import time
import traceback

# Exit codes the parent distinguishes; any other code is an unexpected crash.
EXIT_FAILED = 1
EXIT_GPU_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130

VERBOSITY = {"bar": 1, "line": 2, "none": 0}


class Reporter:
    """Writes one JSON report per line to the parent's pipe."""

    def __init__(self, stream):
        self.stream = stream

    def send(self, event: str, **fields) -> None:
        fields["event"] = event
        self.stream.write(json.dumps(fields, default=_json_default) + "\n")
        self.stream.flush()


class GpuUnavailable(RuntimeError):
    """device=gpu was requested but the backend finds no GPU."""


def _json_default(value):
    # NumPy scalars reach the reports through Keras logs.
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def main(argv: list) -> int:
    if len(argv) != 2 or "WORKER_REPORT_FD" not in os.environ:
        sys.stderr.write("src.worker is started by `python -m src.train`, not by hand.\n")
        return 2

    # A process started in the background by a non-interactive shell inherits SIGINT as ignored,
    # and Python then installs no handler. The parent stops a run with SIGINT, so restore it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    reporter = Reporter(os.fdopen(int(os.environ["WORKER_REPORT_FD"]), "w", encoding="utf-8"))
    with open(argv[1], encoding="utf-8") as spec_file:
        spec = json.load(spec_file)

    try:
        train(spec, reporter, argv[1])
    except GpuUnavailable as error:
        reporter.send("error", kind="gpu_unavailable", message=str(error), traceback="")
        return EXIT_GPU_UNAVAILABLE
    except KeyboardInterrupt:
        reporter.send("error", kind="interrupted", message="interrupted (SIGINT)", traceback="")
        return EXIT_INTERRUPTED
    except Exception as error:  # reported upward with its traceback; the parent records it
        reporter.send(
            "error",
            kind=type(error).__name__,
            message=str(error),
            traceback=traceback.format_exc(),
        )
        return EXIT_FAILED
    return 0


def train(spec: dict, reporter: Reporter, spec_path: str) -> None:
    """Train and evaluate the model that `spec` describes, reporting as it goes."""
    config = spec["config"]
    wants_gpu = config["device"]["name"] == "gpu"
    if wants_gpu and config["backend"]["keras_backend"] == "theano":
        _require_gpu_theano()

    import_started = time.perf_counter()
    import keras

    from src.data.arrays import build_splits
    from src.model import build_model, model_summary

    backend = keras.backend.backend()
    gpus = _visible_gpus(backend)
    reporter.send(
        "runtime",
        import_time_s=time.perf_counter() - import_started,
        versions=_library_versions(keras, backend),
        python=platform.python_version(),
        keras_backend=backend,
        gpus=gpus,
        threads=_configure_threads(keras, config["threads"]),
        blas=_blas_description(backend),
    )

    if wants_gpu and not gpus:
        raise GpuUnavailable(
            "device=gpu was requested but backend={} ({} {}) sees no GPU on this machine. Run with "
            "device=cpu, or check that the GPU is visible (nvidia-smi) and that the CUDA libraries this "
            "backend version needs are installed.".format(
                config["backend"]["name"], backend, _library_versions(keras, backend).get(backend, "")
            )
        )

    _seed_everything(keras, config["seed"])
    if config.get("deterministic"):
        _require_deterministic_ops(keras)

    load_started = time.perf_counter()
    dataset_cfg = config["dataset"]
    splits = build_splits(
        spec["dataset"],
        dataset_cfg["image_shape"],
        limit=dataset_cfg["limit"],
        validation_split=config["validation"]["split"],
        holdout_fraction=config["validation"]["fraction"],
    )
    num_classes = dataset_cfg["num_classes"]
    reporter.send(
        "data",
        load_time_s=time.perf_counter() - load_started,
        train_samples=len(splits.x_train),
        validation_samples=len(splits.x_val),
        test_samples=len(splits.x_test),
    )

    # Theano compiles some modules already while the model is built, so counting and timing its
    # compilation starts here.
    modules_before = _theano_cached_modules() if backend == "theano" else 0
    build_started = time.perf_counter()
    model = build_model(keras, config["model"]["layers"], dataset_cfg["image_shape"], name=config["model"]["name"])
    model.compile(
        optimizer=_make_optimizer(keras, config["optimizer"]),
        loss=config["loss"],
        metrics=["accuracy"],
    )
    if not keras.__version__.startswith("3."):
        reporter.send("compiled", **_compile_keras2_functions(model, backend, build_started, modules_before))
    reporter.send("model", summary=model_summary(model), parameters=int(model.count_params()))

    y_train = _one_hot(splits.y_train, num_classes)
    y_val = _one_hot(splits.y_val, num_classes)
    y_test = _one_hot(splits.y_test, num_classes)

    train_started = time.perf_counter()
    if config["topology"]["name"] == "single":
        model.fit(
            splits.x_train,
            y_train,
            validation_data=(splits.x_val, y_val),
            epochs=config["epochs"],
            batch_size=config["batch_size"],
            shuffle=True,
            verbose=VERBOSITY[spec["progress"]],
            callbacks=[_epoch_reporter(keras, reporter)],
        )
    else:
        from src.distributed import train_on_spark

        # Spark's scratch files go next to the spec, in the parent's folder for this run, which the
        # parent removes even when this process is killed.
        scratch_root = os.path.dirname(os.path.abspath(spec_path))
        train_on_spark(keras, model, splits.x_train, y_train, splits.x_val, y_val, config, reporter, scratch_root)
    train_time_s = time.perf_counter() - train_started

    test_loss, test_accuracy = model.evaluate(splits.x_test, y_test, batch_size=config["batch_size"], verbose=0)
    reporter.send(
        "finished",
        train_time_s=train_time_s,
        test_loss=float(test_loss),
        test_error=1.0 - float(test_accuracy),
    )


def _epoch_reporter(keras, reporter):
    class EpochReporter(keras.callbacks.Callback):
        """Sends each finished epoch's metrics; epochs are numbered from 1."""

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            # Keras 2.2.5 names accuracy "acc", Keras 3 "accuracy".
            accuracy = logs.get("accuracy", logs.get("acc"))
            val_accuracy = logs.get("val_accuracy", logs.get("val_acc"))
            reporter.send(
                "epoch",
                epoch=epoch + 1,
                epoch_time_s=time.perf_counter() - self.started,
                train_loss=float(logs["loss"]),
                train_error=1.0 - float(accuracy),
                val_loss=float(logs["val_loss"]),
                val_error=1.0 - float(val_accuracy),
            )

    return EpochReporter()


def _compile_keras2_functions(model, backend, build_started, modules_before):
    """Build Keras 2's training and test functions now instead of inside the first epoch.

    On Theano this is the one-time C compilation (tens of seconds when the compile cache is
    cold), which would otherwise inflate the first epoch_time_s. Keras 2.2.5 builds these
    functions lazily and keeps them, so fit() and evaluate() reuse what is built here. The
    returned compile_time_s counts from `build_started`, before the model was built.
    """
    model._make_train_function()
    model._make_test_function()
    compile_time_s = time.perf_counter() - build_started

    compiled = {"compile_time_s": compile_time_s}
    if backend == "theano":
        # "warm" means that the cache had modules before this run, not that nothing was compiled.
        # Theano 1.0.5 compiles a few modules of model=paper_cnn again in every process (5 of
        # about 60, measured on MNIST), so new_modules shows how much of the cache was reused.
        compiled["cache"] = "warm" if modules_before else "cold"
        compiled["new_modules"] = _theano_cached_modules() - modules_before
    return compiled


def _theano_cached_modules():
    """Return the number of compiled modules in Theano's compile cache."""
    import theano

    compiledir = theano.config.compiledir
    if not os.path.isdir(compiledir):
        return 0
    return sum(1 for entry in os.listdir(compiledir) if entry.startswith("tmp"))


def _require_gpu_theano():
    """Fail before the import of Keras when Theano has no GPU support to offer."""
    try:
        import pygpu  # noqa: F401 - the GPU back end of Theano 1.0
    except ImportError:
        raise GpuUnavailable(
            "device=gpu was requested with backend=theano, but this Theano has no GPU support: "
            "pygpu (libgpuarray) is not installed in the paper-era runtime. Run with device=cpu, "
            "or install libgpuarray and pygpu with CUDA into .venv-legacy/."
        ) from None


def _make_optimizer(keras, optimizer_cfg):
    optimizer_class = {
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }[optimizer_cfg["name"]]
    if keras.__version__.startswith("2.2."):
        # Keras 2.2 names the step size `lr`; `learning_rate` arrived in 2.3.
        return optimizer_class(lr=optimizer_cfg["learning_rate"])
    return optimizer_class(learning_rate=optimizer_cfg["learning_rate"])


def _one_hot(labels, num_classes):
    import numpy as np

    return np.eye(num_classes, dtype=np.float32)[labels]


def _seed_everything(keras, seed):
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    if hasattr(keras.utils, "set_random_seed"):
        keras.utils.set_random_seed(seed)
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.set_random_seed(seed)


def _require_deterministic_ops(keras):
    """Make the backend choose deterministic kernels, or raise where it cannot (Keras 2 backends).

    On the CPU, TensorFlow 2.19 repeated its per-epoch values bit for bit without this too, but
    no documentation promises that. The values with it differ slightly from those without it.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow" and keras.__version__.startswith("3."):
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        import torch

        torch.use_deterministic_algorithms(True)
    elif backend != "jax":
        # JAX's XLA CPU kernels are deterministic already; the Keras 2 backends have no switch.
        raise ValueError(
            "deterministic=true is not supported with Keras {} on {}: it has no switch for "
            "deterministic kernels. Run with deterministic=false.".format(keras.__version__, backend)
        )


def _configure_threads(keras, threads_cfg):
    """Apply the configured thread pools where the backend has an API for it; return what is in force.

    0 means the library's own choice, one thread per core.
    """
    if keras.backend.backend() == "tensorflow" and keras.__version__.startswith("3."):
        import tensorflow as tf

        if threads_cfg["intra_op"]:
            tf.config.threading.set_intra_op_parallelism_threads(threads_cfg["intra_op"])
        if threads_cfg["inter_op"]:
            tf.config.threading.set_inter_op_parallelism_threads(threads_cfg["inter_op"])
        return {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        }

    if keras.backend.backend() == "torch":
        import torch

        if threads_cfg["intra_op"]:
            torch.set_num_threads(threads_cfg["intra_op"])
        if threads_cfg["inter_op"]:
            torch.set_num_interop_threads(threads_cfg["inter_op"])
        return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}

    if keras.backend.backend() == "jax":
        # NOTE: jax 0.7.1 has no API for its thread pools: XLA's CPU client sizes them from the
        # cores it detects, so threads.* does not reach it and 0 (the library's choice) is reported.
        return {"intra_op": 0, "inter_op": 0}

    # Keras 2.2.5 sizes both pools of its TensorFlow session from OMP_NUM_THREADS, and Theano's
    # loops and OpenBLAS read the same variable. The parent sets it from threads.intra_op.
    omp_threads = int(os.environ.get("OMP_NUM_THREADS") or 0)
    return {"intra_op": omp_threads, "inter_op": omp_threads if keras.backend.backend() == "tensorflow" else 0}


def _visible_gpus(backend):
    if backend == "theano":
        import theano

        # theano.config.device can be cuda while pygpu failed to load and Theano runs on the CPU.
        from theano import gpuarray

        return [theano.config.device] if gpuarray.pygpu_activated else []
    if backend == "tensorflow":
        import tensorflow as tf

        if hasattr(tf.config, "list_physical_devices"):
            return [device.name for device in tf.config.list_physical_devices("GPU")]
        return [name for name in _tf1_device_names() if "GPU" in name]
    if backend == "jax":
        import jax

        try:
            return [str(device) for device in jax.devices() if device.platform == "gpu"]
        except (RuntimeError, AssertionError):
            # With JAX_PLATFORMS=cuda and no usable CUDA plugin, jax 0.7.1 raises a bare AssertionError.
            return []
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
    return []


def _tf1_device_names():
    from tensorflow.python.client import device_lib

    return [device.name for device in device_lib.list_local_devices()]


def _library_versions(keras, backend):
    import numpy as np

    versions = {"keras": keras.__version__, "numpy": np.__version__}
    if backend == "tensorflow":
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    elif backend == "theano":
        import theano

        versions["theano"] = theano.__version__
    elif backend == "jax":
        import jax
        import jaxlib

        versions["jax"] = jax.__version__
        versions["jaxlib"] = jaxlib.__version__
    elif backend == "torch":
        import torch

        versions["torch"] = torch.__version__
    return versions


def _blas_description(backend):
    """Return the BLAS libraries NumPy and the backend load, as threadpoolctl reports them."""
    prefix = ""
    if backend == "theano":
        import theano

        prefix = "theano blas.ldflags={}; ".format(theano.config.blas.ldflags or "(none: NumPy fallback)")
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return prefix + "unknown (threadpoolctl not installed)"
    return prefix + "; ".join(
        "{} {} ({} threads)".format(pool.get("internal_api"), pool.get("version"), pool.get("num_threads"))
        for pool in threadpool_info()
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv))
