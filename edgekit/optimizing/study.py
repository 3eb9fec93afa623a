"""``edgekit.optimize``: the fastest form of a model within an accuracy budget, measured on the device.

An Optuna study (multi-objective: p50 latency, accuracy drop, size; the budget a constraint on the measured
drop, or with ``require_bound`` on its upper 95 % confidence bound) lives in SQL storage — an SQLite file in the
output folder by default, so Ctrl-C and a rerun continue where it stopped; PostgreSQL to share one study between
worker processes or machines. Each format's default int8 and fp32 conversions are enqueued first (the
baselines), a brute-force sweep replaces TPE when the space is no larger than the trial budget, and every
conversion and measurement is cached by content, so no finished work is redone. At the end the feasible Pareto
front and the baselines are re-measured interleaved (differences within the noise floor are ties) and re-checked
on held-out data no trial was chosen on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit.optimizing.cache import Cache, digest
from edgekit.optimizing.evaluate import Evaluator, Settings
from edgekit.optimizing.result import OptimizeResult, reproduce, safe_url, write_outputs
from edgekit.optimizing.space import PRECISIONS, Space
from edgekit.pipeline.job import PREPARE_KEYWORDS, ConversionJob, as_job
from edgekit.pipeline.preprocess import Recipe
from edgekit.runtimes.errors import EdgekitError, MissingDependencyError, spelled

log = logging.getLogger("edgekit")
trial_log = logging.getLogger("edgekit.optimize")  # one line per trial; the CLI shows it on stderr

STUDY_FILE = "study.db"
SETTINGS_ATTR = "edgekit_settings"
RUN_ENV = "EDGEKIT_OPTIMIZE_RUN"  # the invocation a spawned worker's trials count for
STORAGE_ENV = "EDGEKIT_STORAGE"  # --storage's default: keeps a database password out of argv
MAX_REPEATS = 25  # proposals in a row of points already evaluated before the search counts as exhausted


class TrialFailed(Exception):
    """A candidate that could not be converted or run: recorded as a failed trial with its reason."""


def optimize(
    model: Any,
    *,
    output_dir: str | Path,
    val: str | Path | None = None,
    budget: float = 1.0,
    cosine: float | None = None,
    formats: tuple[str, ...] | list[str] = ("tflite", "onnx", "openvino"),
    trials: int = 30,
    timeout_s: float | None = None,
    storage: str | None = None,
    study: str | None = None,
    workers: int = 1,
    remote: str | None = None,
    ssh: dict[str, Any] | None = None,
    max_kept_float: int = 8,
    settle_rounds: int = 5,
    search_seed: int = 0,
    require_bound: bool = False,
    **preparation: Any,
) -> OptimizeResult:
    """Search formats, precisions, quantization and runtime options for the fastest artifact within ``budget``.

    Args:
        model: A ``ConversionJob`` from ``edgekit.prepare`` with calibration data given as a path, or a model
            ``prepare`` takes with its keywords (``calibration`` required; ``input_shapes``, ``recipe``,
            ``calib_size``, ``validation_size``, ``seed``, ``name``, ``trust_pickle``, ``example_inputs``) as
            ``preparation``. The calibration data's held-out part judges accuracy unless ``val``. Worker
            processes (``workers``, ``--worker``) prepare the model again from its path: an in-memory
            ``nn.Module`` is searched in one process only.
        output_dir: Where the study, the cache, the trial table, the report and the winning artifact go.
        val: Labeled validation data (image folder with class sub-folders): the drop is then in accuracy points.
        budget: The largest drop allowed: accuracy points with labels, else (1 - cosine) x 100.
        cosine: Judge by cosine similarity with the float model instead: the budget becomes (1 - cosine) x 100.
        formats: Any of ``tflite``, ``onnx``, ``openvino``.
        trials: Trials the study ends with (a rerun continues up to this count).
        timeout_s: Stop starting new trials after this many seconds.
        storage: An Optuna storage URL (``postgresql://...`` to share the study); default an SQLite file in
            ``output_dir``.
        study: The study's name (default: the model's stem and a digest of the settings).
        workers: Worker processes on this machine (more than one needs a server storage such as PostgreSQL).
        remote: ``USER@HOST[:PORT]``: measure latency on that device over SSH; ``ssh`` holds ``identity``,
            ``known_hosts``, ``accept_new_host_key`` and the device's ``python``.
        max_kept_float: The most layers the search may keep in float, by sensitivity rank.
        settle_rounds: Interleaved re-measurements of the front and the baselines at the end.
        search_seed: The sampler's seed (``seed`` shuffles the data, as in ``convert``).
        require_bound: Hold the budget on the drop's upper 95 % confidence bound instead of the measured drop
            (the bound is reported either way, with the validation samples that would prove the budget).

    Returns:
        An ``OptimizeResult``: the chosen point, the front, every trial and the report's path.
    """
    if "val_size" in preparation:  # the name before prepare() existed
        warnings.warn("optimize(val_size=...) is now validation_size=..., as in prepare() and convert(); val_size "
                      "will be removed in the next release", DeprecationWarning, stacklevel=2)
        preparation["validation_size"] = preparation.pop("val_size")
    unknown = sorted(set(preparation) - set(PREPARE_KEYWORDS))
    if unknown:
        raise TypeError(f"optimize() got unexpected keyword argument(s) {unknown}")
    formats = _check_search(formats, budget, cosine, trials, settle_rounds, remote, timeout_s, workers)
    _check_data(model.calibration if isinstance(model, ConversionJob) else preparation.get("calibration"), val)
    job = as_job(model, preparation, "optimize")
    settings = _settings(job, val=val, budget=budget, cosine=cosine, formats=formats, trials=trials, remote=remote,
                         ssh=ssh, max_kept_float=max_kept_float, settle_rounds=settle_rounds, search_seed=search_seed,
                         require_bound=require_bound)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out / STUDY_FILE).resolve()}"
    if workers > 1 and url.startswith("sqlite"):
        server = spelled("--storage postgresql://USER@HOST/DB", "storage='postgresql://USER@HOST/DB'")
        raise EdgekitError(f"{spelled('--workers')} {workers} needs a server storage: SQLite is not safe for "
                           f"parallel workers (Optuna's FAQ); pass {server}")
    if workers > 1 and not isinstance(job.model, (str, os.PathLike)):
        raise EdgekitError(f"{spelled('--workers')} needs a model file: worker processes cannot share an in-memory "
                           "module")
    study_name = study or f"{job.stem}-{digest(settings.search_key())[:8]}"
    run_id = uuid.uuid4().hex[:12]
    optuna_study = _open_study(url, study_name, settings, create=True)
    space = _space(settings)
    evaluator = Evaluator(settings, Cache(out / "cache"), job=job)
    evaluator.lease_engine = _shared_engine(optuna_study)
    if not optuna_study.trials:
        for params in space.defaults():  # the coordinator alone enqueues (concurrent enqueues duplicate)
            optuna_study.enqueue_trial(params, user_attrs={"baseline": _baseline_name(params)}, skip_if_exists=True)
    helpers = [_spawn_worker(url, study_name, out, run_id, settings) for _ in range(workers - 1)]
    try:
        _run_trials(optuna_study, evaluator, space, settings, run_id, timeout_s)
    except BaseException:  # Ctrl-C or an error here: the helpers stop too (their trial in flight is lost)
        for helper in helpers:
            helper.terminate()
        raise
    finally:
        for helper in helpers:
            helper.wait()
    failed_helpers = [h.returncode for h in helpers if h.returncode not in (0, None)]
    if failed_helpers:
        log.warning("worker process(es) exited with %s", failed_helpers)
    return write_outputs(optuna_study, evaluator, settings, out, run_id=run_id, storage=url, study_name=study_name)


def run_worker(storage: str, study_name: str, output_dir: str | Path, *, trust_pickle: bool = False,
               ssh: dict[str, Any] | None = None) -> int:
    """Join a study another ``optimize`` created: evaluate trials until it has its count. Returns how many
    this worker evaluated.

    The study's stored settings say what to search; what to trust is this worker's own to say: ``trust_pickle``
    and ``ssh`` (identity, known_hosts, accept_new_host_key, the device's python) come from its arguments, never
    from the storage, and the stored name and remote are checked as if typed on the command line."""
    out = Path(output_dir)
    optuna_study = _open_study(storage, study_name, None, create=False)
    settings = Settings.from_study(optuna_study.user_attrs.get(SETTINGS_ATTR), trust_pickle=trust_pickle, ssh=ssh,
                                   origin=f"study '{study_name}' in {safe_url(storage)}")
    evaluator = Evaluator(settings, Cache(out / "cache"))
    evaluator.lease_engine = _shared_engine(optuna_study)
    run_id = os.environ.get(RUN_ENV) or uuid.uuid4().hex[:12]
    return _run_trials(optuna_study, evaluator, _space(settings), settings, run_id, None)


def _check_search(formats: Any, budget: float, cosine: float | None, trials: int, settle_rounds: int,
                  remote: str | None, timeout_s: float | None, workers: int) -> tuple[str, ...]:
    """The search's own options, checked before the model is opened; returns the formats, normalised."""
    if timeout_s is not None and timeout_s <= 0:
        raise EdgekitError(f"{spelled('--timeout', 'timeout_s')} must be positive, got {timeout_s:g} s")
    if workers < 1:
        raise EdgekitError(f"{spelled('--workers')} must be at least 1, got {workers}")
    chosen = tuple(dict.fromkeys(f.strip().lower() for f in formats if f.strip()))
    unknown = [f for f in chosen if f not in PRECISIONS]
    if unknown or not chosen:
        raise EdgekitError(f"{spelled('--formats')} {','.join(unknown) or '(none)'}: choose from "
                           f"{', '.join(PRECISIONS)}")
    if cosine is not None and not 0 < cosine <= 1:
        raise EdgekitError(f"{spelled('--cosine')} must be in (0, 1], got {cosine:g}")
    if cosine is None and budget < 0:
        raise EdgekitError(f"{spelled('--budget')} must be zero or more accuracy points, got {budget:g}")
    if trials < 1:
        raise EdgekitError(f"{spelled('--trials')} must be at least 1, got {trials}")
    if settle_rounds < 1:
        raise EdgekitError(f"{spelled('--settle-rounds')} must be at least 1, got {settle_rounds}")
    if remote:
        from edgekit.profiling.remote import parse_remote

        parse_remote(remote)
    return chosen


def _check_data(calibration: Any, val: Any) -> None:
    """Workers read the data again from where the study says: it must be a path, and real."""
    if not isinstance(calibration, (str, os.PathLike)) or str(calibration) == "random":
        raise EdgekitError(f"{spelled('--calib', 'calibration')} {calibration!s:.40}: optimize needs real data as a "
                           "path (image folder, .npy, .npz), since it judges accuracy on its held-out part")
    for flag, path in ((spelled("--calib", "calibration"), calibration), (spelled("--val"), val)):
        if path is not None and not Path(path).exists():
            raise EdgekitError(f"{flag} '{path}' does not exist; check the path")


def _settings(job: ConversionJob, *, val: Any, budget: float, cosine: float | None, formats: tuple[str, ...],
              trials: int, remote: str | None, ssh: dict[str, Any] | None, max_kept_float: int,
              settle_rounds: int, search_seed: int, require_bound: bool) -> Settings:
    """The study's settings: the search's options and the arguments ``job`` was prepared from."""
    if job.dequantize:  # (its data was checked to be a real path: the job has a dataset)
        raise EdgekitError("optimize does not take a job prepared with dequantize=True: prepare it without")
    model = job.model
    return Settings(
        model=str(Path(model).resolve()) if isinstance(model, (str, os.PathLike)) else f"<{type(model).__name__}>",
        calibration=str(Path(job.calibration).resolve()), val=str(Path(val).resolve()) if val else None,
        budget=float((1 - cosine) * 100 if cosine is not None else budget),
        metric="cosine" if cosine is not None else "auto",
        formats=formats, trials=trials,
        input_shapes={k: list(v) for k, v in (job.input_shapes or {}).items()}, recipe=_recipe_asked(job.recipe),
        calib_size=job.calib_size, val_size=job.validation_size, seed=job.seed, name=job.name,
        trust_pickle=job.trust_pickle, max_kept_float=max_kept_float, remote=remote,
        ssh={k: str(v) if isinstance(v, Path) else v for k, v in (ssh or {}).items()}, settle_rounds=settle_rounds,
        search_seed=search_seed, require_bound=bool(require_bound))


def _recipe_asked(recipe: Recipe) -> dict[str, Any]:
    """The recipe as the study stores it: empty when it is the default (what a study made before jobs stored,
    so its name, cache keys and reproduce commands stay as they were)."""
    return {} if recipe == Recipe() else recipe.to_dict()


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:
        raise MissingDependencyError("optuna (needed for edgekit optimize)", "optimize") from exc
    # Optuna logs a failed trial with its traceback; edgekit logs the one-line reason itself
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


@contextlib.contextmanager
def _quiet_experimental(optuna: Any) -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _open_study(url: str, study_name: str, settings: Settings | None, *, create: bool) -> Any:
    optuna = _optuna()
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}}
                                             if url.startswith("sqlite") else {})
        if not create:
            return optuna.load_study(study_name=study_name, storage=storage)
        found = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True,
                                    directions=["minimize", "minimize", "minimize"])
    except KeyError as exc:
        raise EdgekitError(f"no study '{study_name}' in {safe_url(url)}; start it with edgekit optimize MODEL "
                           f"--study {study_name} --storage URL first") from exc
    except Exception as exc:  # SQLAlchemy's connection and schema errors have no common base worth naming here
        if isinstance(exc, EdgekitError):
            raise
        reason = safe_url(url, (str(exc).splitlines() or [type(exc).__name__])[0])
        # not chained: the driver's exception quotes the URL, password and all, in a --debug traceback
        raise EdgekitError(f"cannot open the study storage {safe_url(url)}: {reason}") from None
    with _quiet_experimental(optuna):
        found.set_metric_names(["latency_p50_ms", "drop", "size_mb"])
    stored = found.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        found.set_user_attr(SETTINGS_ATTR, settings.shared())
    elif (before := Settings.from_study(stored).search_key()) != settings.search_key():
        changed = sorted(k for k, v in settings.search_key().items() if before.get(k) != v)
        raise EdgekitError(f"study '{study_name}' was started with other settings ({', '.join(changed)} differ); "
                           f"pass another {spelled('--study')} or the same settings")
    return found


def _space(settings: Settings) -> Space:
    cores = os.cpu_count() or 1
    counts = (1, 2, 4) if settings.remote else tuple(n for n in (1, 2, 4, 8) if n <= cores)
    return Space(settings.formats, (0, *counts), settings.max_kept_float)


def _baseline_name(params: dict[str, Any]) -> str:
    fmt = params["format"]
    return f"{fmt}-{params[f'{fmt}.precision']} default"


def _shared_engine(study: Any) -> Any:
    """The SQLAlchemy engine of a study kept on a database server (None for SQLite: one machine only)."""
    storage = getattr(study._storage, "_backend", study._storage)  # Optuna wraps RDBStorage in a cache
    engine = getattr(storage, "engine", None)
    return engine if engine is not None and engine.dialect.name == "postgresql" else None


def _spawn_worker(url: str, study_name: str, out: Path, run_id: str, settings: Settings) -> subprocess.Popen:
    """A worker on this machine with the coordinator's own trust flags; the storage URL travels in the
    environment (``STORAGE_ENV``), not in argv, where ``ps`` would show its password to every user."""
    command = [sys.executable, "-c", "from edgekit.cli import main; main()", "optimize", "--worker",
               "--study", study_name, "-o", str(out)]
    command += ["--trust-pickle"] if settings.trust_pickle else []
    ssh = settings.ssh
    for flag, key in (("--identity", "identity"), ("--known-hosts", "known_hosts"), ("--python", "python")):
        command += [flag, str(ssh[key])] if ssh.get(key) else []
    command += ["--accept-new-host-key"] if ssh.get("accept_new_host_key") else []
    return subprocess.Popen(command, env={**os.environ, RUN_ENV: run_id, STORAGE_ENV: url},
                            stdout=subprocess.DEVNULL)


def finished(study: Any) -> list[Any]:
    """Trials that count: complete ones, and those that failed for a reason of their own (not an interrupt)."""
    states = study.get_trials(deepcopy=False)
    return [t for t in states if t.state.name == "COMPLETE" or (t.state.name == "FAIL" and "error" in t.user_attrs)]


def _run_trials(study: Any, evaluator: Evaluator, space: Space, settings: Settings, run_id: str,
                timeout_s: float | None) -> int:
    optuna = _optuna()
    if len(finished(study)) >= settings.trials:
        return 0
    points = len(space.enumerate())
    with _quiet_experimental(optuna):  # TPE's group= is "experimental" since Optuna 2.8; used as its docs advise
        seed = settings.search_seed
        study.sampler = optuna.samplers.BruteForceSampler(seed=seed) if points <= settings.trials else \
            optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    evaluated, repeats = [0], [0]
    interrupt = DeferredInterrupt()

    def objective(trial: Any) -> tuple[float, float, float]:
        with interrupt.allowed():
            return evaluate(trial)

    def evaluate(trial: Any) -> tuple[float, float, float]:
        candidate = space.suggest(trial)
        twin = _evaluated_twin(study, candidate, trial.number)
        if twin is not None:  # a sampler may propose a point again: it costs a trial, not a measurement
            repeats[0] += 1
            trial.set_user_attr("duplicate_of", twin)
            raise optuna.TrialPruned(f"same point as trial {twin}")
        repeats[0] = 0
        trial.set_user_attr("run", run_id)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("candidate", candidate.to_dict())
        evaluated[0] += 1
        try:
            artifact = evaluator.convert(candidate)
            accuracy = evaluator.accuracy(candidate, artifact)
            latency = evaluator.latency(candidate, artifact)
        except EdgekitError as exc:
            trial.set_user_attr("error", str(exc))
            trial_log.warning("trial %d (%s) failed: %s", trial.number, candidate.describe(), exc)
            raise TrialFailed(str(exc)) from exc
        trial.set_user_attr("artifact", artifact)
        trial.set_user_attr("accuracy", accuracy)
        trial.set_user_attr("latency", latency)
        trial.set_constraint("drop_minus_budget", settings.judged(accuracy) - settings.budget)
        trial_log.info("trial %d: %s -> %.4f ms, drop %.3f (bound %.3f, budget %g), %d bytes", trial.number,
                       candidate.describe(), latency["p50_ms"], accuracy["drop"], accuracy["drop_ucb"],
                       settings.budget, artifact["size_bytes"])
        return latency["p50_ms"], accuracy["drop"], artifact["size_bytes"] / 1e6

    def stop_when_done(study: Any, trial: Any) -> None:
        interrupt.raise_if_pending()
        if len(finished(study)) >= settings.trials:
            study.stop()
        elif repeats[0] >= MAX_REPEATS:
            log.warning("the sampler proposed only points already evaluated %d times in a row: stopping with "
                        "%d trials (the space is exhausted for it)", MAX_REPEATS, len(finished(study)))
            study.stop()

    started = time.monotonic()
    with interrupt:
        study.optimize(objective, timeout=timeout_s, catch=(TrialFailed,), callbacks=[stop_when_done])
    log.info("%d trial(s) evaluated in %.1f s", evaluated[0], time.monotonic() - started)
    return evaluated[0]


class DeferredInterrupt:
    """Ctrl-C stops a trial at once, but never while Optuna writes to its storage.

    A KeyboardInterrupt raised inside SQLAlchemy's commit leaves Optuna in a state it asserts cannot happen
    ("Should not reach") and the user sees its traceback. So SIGINT raises only while a trial's own work runs
    (``allowed()``); arriving during bookkeeping it is kept and raised at the next safe point: the start of the
    next trial or the callback after the one just recorded. Outside the main thread Python delivers no signals
    to us, so there the guard does nothing.
    """

    def __init__(self) -> None:
        self.pending = False
        self._inside_trial = False
        self._previous: Any = None

    def __enter__(self) -> DeferredInterrupt:
        # only over a handler Python can put back (None: one installed by native code, left alone)
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not None:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._inside_trial:
            raise KeyboardInterrupt
        self.pending = True

    def raise_if_pending(self) -> None:
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def allowed(self) -> Iterator[None]:
        self.raise_if_pending()
        self._inside_trial = True
        try:
            yield
        finally:
            self._inside_trial = False


def _evaluated_twin(study: Any, candidate: Any, number: int) -> int | None:
    """The trial that already evaluated (or is evaluating) this exact point, if any."""
    key = candidate.to_dict()
    for other in study.get_trials(deepcopy=False):
        if other.number != number and other.state.name in ("COMPLETE", "RUNNING") \
                and other.user_attrs.get("candidate") == key:
            return other.number
    return None


__all__ = ["TrialFailed", "optimize", "reproduce", "run_worker"]
