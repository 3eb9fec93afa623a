"""One trial's work: convert a candidate, measure its accuracy drop and its latency, each cached by content.

Accuracy is judged per sample against the float original on a *search* split. The budget is checked on the
measured drop, as NNCF's accuracy control and a user's own evaluation do; the upper confidence bound of the
drop (one-sided 95 %, normal approximation) is reported beside it with the samples that would prove the budget,
and ``require_bound`` checks the budget on the bound instead. A second, *held-out* split that no trial is chosen
on re-checks the final front. With labels the
drop is in accuracy points (classifier outputs); otherwise it is (1 - cosine) x 100 per sample, the worst
output counting — the same basis ``convert --max-drop`` uses.
"""

from __future__ import annotations

import hashlib
import logging
import math
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit import __version__
from edgekit._files import write_atomic
from edgekit.optimizing.cache import Cache, device_lease, digest, matches_sha256
from edgekit.optimizing.space import KEEP_FLOAT_OPTION, Candidate
from edgekit.runtimes.errors import ConversionError, EdgekitError, spelled
from edgekit.runtimes.formats import hash_feeds

if TYPE_CHECKING:
    from edgekit.pipeline.job import ConversionJob

log = logging.getLogger("edgekit")

Z_95 = 1.645  # one-sided 95 % normal quantile


def _stored_schema() -> dict[str, Any]:
    """The fields a study stores for its workers, as ``edgekit.report.schema`` checks them."""
    from edgekit.report.schema import FLAG, INTEGER, NUMBER, RECIPE, TEXT, ListOf, MapOf, optional

    return {"model": TEXT, "calibration": TEXT, "val": optional(TEXT), "budget": NUMBER, "metric": TEXT,
            "formats": ListOf(TEXT), "trials": INTEGER, "input_shapes": MapOf(ListOf(INTEGER)), "recipe": RECIPE,
            "calib_size": INTEGER, "val_size": optional(INTEGER), "seed": INTEGER, "name": optional(TEXT),
            "max_kept_float": INTEGER, "remote": optional(TEXT), "settle_rounds": INTEGER, "search_seed": INTEGER,
            "profile": MapOf(NUMBER), "require_bound": FLAG}


@dataclass(frozen=True)
class Settings:
    """Everything a trial depends on besides its candidate; JSON-safe, stored in the study so a ``--worker``
    can join it with nothing but the storage URL and the study name."""

    model: str
    calibration: str
    val: str | None = None
    budget: float = 1.0
    metric: str = "auto"  # auto: labels when the data and outputs allow, else cosine; or "cosine"
    formats: tuple[str, ...] = ("tflite", "onnx", "openvino")
    trials: int = 30
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    calib_size: int = 200
    val_size: int | None = None
    seed: int = 0
    name: str | None = None
    trust_pickle: bool = False
    max_kept_float: int = 8
    remote: str | None = None  # USER@HOST[:PORT]; None: this machine
    ssh: dict[str, Any] = field(default_factory=dict)  # identity, known_hosts, accept_new_host_key, python
    settle_rounds: int = 5  # interleaved re-measurements of the front at the end
    search_seed: int = 0  # the sampler's (``seed`` is the data shuffle's, as in convert)
    profile: dict[str, float] = field(default_factory=lambda: {"runs": 30, "warmup_seconds": 0.2,
                                                                "min_seconds": 0.5, "max_seconds": 10.0})
    # judge the budget on the drop's upper 95 % bound rather than on the measured drop
    require_bound: bool = False

    def preparation(self) -> dict[str, Any]:
        """``edgekit.prepare``'s keywords for these settings: how a worker opens the model and reads the data."""
        from edgekit.pipeline.preprocess import Recipe

        return {"calibration": self.calibration, "name": self.name, "trust_pickle": self.trust_pickle,
                "input_shapes": {k: tuple(v) for k, v in self.input_shapes.items()} or None,
                "recipe": Recipe.from_dict(self.recipe),
                "calib_size": self.calib_size, "validation_size": self.val_size, "seed": self.seed}

    def judged(self, accuracy: dict[str, Any]) -> float:
        """The figure the budget is checked on: the measured drop, or its upper bound with ``require_bound``."""
        return accuracy["drop_ucb"] if self.require_bound else accuracy["drop"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def shared(self) -> dict[str, Any]:
        """What the study stores for its workers: everything but the trust decisions, which each worker takes
        from its own command line (anyone who can write the storage could otherwise hand them out)."""
        return {k: v for k, v in self.to_dict().items() if k not in WORKER_OWN}

    @classmethod
    def from_study(cls, stored: Any, *, trust_pickle: bool = False, ssh: dict[str, Any] | None = None,
                   origin: str = "the study's stored settings") -> Settings:
        """Settings read back from shared storage, each field checked, with this process's own trust decisions.

        Raises:
            EdgekitError: A field of the wrong type, an unknown field, or a name or remote edgekit refuses.
        """
        from edgekit._files import check_stem
        from edgekit.profiling.remote import parse_remote
        from edgekit.report.schema import check

        schema = _stored_schema()
        check(stored, schema, origin)
        unknown = sorted(set(stored) - set(schema) - WORKER_OWN)
        if unknown:
            raise EdgekitError(f"{origin}: unknown field(s) {unknown}; was the study made by another edgekit?")
        data = {k: v for k, v in stored.items() if k not in WORKER_OWN}
        if data.get("name") is not None:
            check_stem(data["name"])
        if data.get("remote"):
            parse_remote(data["remote"])
        data["formats"] = tuple(data["formats"])
        return cls(**data, trust_pickle=trust_pickle, ssh=dict(ssh or {}))

    def search_key(self) -> dict[str, Any]:
        """What makes two studies the same question (the trial count and this process's trust decisions do
        not)."""
        data = self.shared()
        for name in ("trials", "settle_rounds", "search_seed"):
            data.pop(name)
        return data


#: each process decides these for itself: loading pickles, and how to reach (and trust) a device over SSH
WORKER_OWN = frozenset({"trust_pickle", "ssh"})


class Evaluator:
    """Converts, validates and profiles candidates for one model and data set."""

    def __init__(self, settings: Settings, cache: Cache, *, job: ConversionJob | None = None) -> None:
        """``job``: the ``ConversionJob`` the settings were made from (the coordinator's); a worker prepares
        its own from the settings."""
        from edgekit.pipeline.calibration import every_sample
        from edgekit.pipeline.job import prepare, tool_versions

        self.settings, self.cache = settings, cache
        self.job = job if job is not None else prepare(settings.model, **settings.preparation())
        self.model_sha = self.job.source_info["sha256"]
        self.tools = tool_versions()
        inputs, recipe = self.job.source.inputs, self.job.recipe
        samples = every_sample(settings.val, inputs, recipe=recipe, seed=settings.seed)[0] \
            if settings.val else list(self.job.dataset.validation)
        if len(samples) < 4:
            raise EdgekitError(f"only {len(samples)} validation sample(s): optimize needs at least 4 (half to "
                               f"search on, half held out); pass more data or {spelled('--val')}")
        # even samples steer the search, odd ones re-check the final front: no point is judged on its own data
        self.splits = {"search": samples[0::2], "heldout": samples[1::2]}
        calibration = list(self.job.dataset.calibration)  # loaded once: both digests need it
        self.data_sha = _samples_digest(calibration + samples)
        self.calibration_sha = _samples_digest(calibration)
        self.reference = self._reference_outputs()  # split -> per sample -> every output
        first = self.reference["search"][0][0]
        self.labeled = settings.metric != "cosine" and all(s.label is not None for s in samples) \
            and first.ndim == 2 and first.shape[1] > 1
        self.basis = "accuracy points (labels)" if self.labeled else "(1 - cosine) x 100 (no labels)"
        self.device = settings.remote or f"local:{socket.gethostname()}"
        self.lease_engine = None  # a shared study's database engine: devices are then leased through it

    # -- the float original ------------------------------------------------------------------------------
    def _reference_outputs(self) -> dict[str, list[list[np.ndarray]]]:
        """The float model's outputs on both splits, per sample, cached."""
        key = digest("reference", self.model_sha, self.data_sha, self.tools)
        folder = self.cache.folder("reference", key)
        stored = folder / "outputs.npz"
        if self.cache.get("reference", key) is None:
            reference = self.job.float_reference(folder)
            try:
                arrays = {}
                for split, samples in self.splits.items():
                    for index, sample in enumerate(samples):
                        for position, value in enumerate(reference.run(sample.feeds).values()):
                            arrays[f"{split}/{index}/{position}"] = np.asarray(value, dtype=np.float32)
            finally:
                reference.close()
            write_atomic(stored, lambda tmp: np.savez(tmp, **arrays), force=True)
            self.cache.put("reference", key, {"samples": {k: len(v) for k, v in self.splits.items()}})
        with np.load(stored) as loaded:
            outputs = sum(1 for name in loaded.files if name.startswith("search/0/"))
            return {split: [[loaded[f"{split}/{i}/{p}"] for p in range(outputs)] for i in range(len(samples))]
                    for split, samples in self.splits.items()}

    # -- convert -------------------------------------------------------------------------------------------
    def convert(self, candidate: Candidate) -> dict[str, Any]:
        """The candidate's artifact (converted now, or found in the cache): path, sha256, size, options."""
        from edgekit.pipeline.conversion import convert

        options = dict(candidate.options)
        if candidate.kept_float:
            ranking = self.ranking(candidate.target)
            options[KEEP_FLOAT_OPTION[candidate.target]] = tuple(r["node"] for r in ranking[: candidate.kept_float])
        key = digest("artifact", self.model_sha, self.calibration_sha, candidate.target, options, self.tools,
                     __version__, self.settings.input_shapes, self.settings.recipe,
                     self.settings.calib_size, self.settings.seed)
        with self.cache.locked("artifacts", key):
            found = self.cache.get("artifacts", key)
            cached = self.cache.inside(found["path"]) if found is not None else None
            if cached is not None and matches_sha256(cached, found["sha256"]):
                return {**found, "path": str(cached), "cached": True}
            if found is not None:  # edited, replaced or pointing elsewhere: never measured or shipped as it is
                log.warning("the cached %s artifact %s is not what was cached (its path or sha256 differs); "
                            "converting it again", candidate.target, found.get("path"))
            folder = self.cache.folder("artifacts", key)
            started = time.perf_counter()
            (result,) = convert(self.job, candidate.target, output_dir=folder, validate_outputs=False,
                                check_speed=False, repair=False, force=True, **options)
            if not result.passed:  # e.g. an "int8" artifact that came out mostly float: not a point to offer
                raise ConversionError(f"{candidate.target}: {'; '.join(result.report['failures'])}")
            entry = {"path": str(result.artifact.relative_to(self.cache.root)), "sha256":
                     result.report["artifact"]["sha256"], "size_bytes": result.report["artifact"]["size_bytes"],
                     "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
                     "convert_s": round(time.perf_counter() - started, 3),
                     "report": str(result.report_path.relative_to(self.cache.root))}
            self.cache.put("artifacts", key, entry)
        return {**entry, "path": str(result.artifact), "cached": False}

    def ranking(self, target: str) -> list[dict[str, Any]]:
        """The target's per-layer sensitivity ranking, built once per model, target and calibration set."""
        from edgekit.pipeline.conversion import sensitivity_ranking

        key = digest("ranking", self.model_sha, self.calibration_sha, target, self.tools)
        with self.cache.locked("ranking", key):
            found = self.cache.get("ranking", key)
            if found is None:
                ranking = sensitivity_ranking(self.job, target, work_dir=self.cache.folder("ranking", key))
                if not ranking:
                    raise EdgekitError(f"{target}: this model's route gives no per-layer sensitivity ranking, so "
                                       "no layer can be kept float by rank")
                found = self.cache.put("ranking", key, {"ranking": ranking})
        return found["ranking"]

    # -- accuracy ------------------------------------------------------------------------------------------
    def accuracy(self, candidate: Candidate, artifact: dict[str, Any], split: str = "search") -> dict[str, Any]:
        """The candidate's drop on ``split``: mean, its upper 95 % bound and the basis, cached."""
        runtime_options = {k: v for k, v in candidate.runtime_options().items() if k != "threads"}
        key = digest("accuracy", artifact["sha256"], split, self.data_sha, runtime_options, self.settings.metric)
        found = self.cache.get("accuracy", key)
        if found is not None:
            return found
        from edgekit.pipeline.validation import cosine
        from edgekit.runtimes import open_runtime

        started = time.perf_counter()
        per_sample, correct = [], []
        with open_runtime(artifact["path"], **runtime_options) as runtime:
            for index, sample in enumerate(self.splits[split]):
                outputs = [np.asarray(v, dtype=np.float32) for v in runtime.run(sample.feeds).values()]
                reference = self.reference[split][index]
                if self.labeled:
                    ref_right = int(reference[0].argmax() == sample.label)
                    right = int(outputs[0].argmax() == sample.label)
                    per_sample.append((ref_right - right) * 100.0)
                    correct.append(right)
                else:
                    per_sample.append((1 - min(cosine(r, o) for r, o in zip(reference, outputs))) * 100)
        drops = np.asarray(per_sample)
        spread = float(drops.std(ddof=1) / np.sqrt(len(drops))) if len(drops) > 1 else 0.0
        found = {"drop": round(float(drops.mean()), 4), "drop_ucb": round(float(drops.mean()) + Z_95 * spread, 4),
                 "drop_sd": round(float(drops.std(ddof=1)), 4) if len(drops) > 1 else 0.0,
                 "samples": len(drops), "basis": self.basis,
                 "accuracy": round(100.0 * float(np.mean(correct)), 3) if correct else None,
                 "validate_s": round(time.perf_counter() - started, 3), "execution": runtime.precision}
        return self.cache.put("accuracy", key, found)

    def float_accuracy(self, split: str) -> float | None:
        if not self.labeled:
            return None
        right = [int(ref[0].argmax() == s.label) for ref, s in zip(self.reference[split], self.splits[split])]
        return round(100.0 * float(np.mean(right)), 3)

    # -- latency -------------------------------------------------------------------------------------------
    def latency(self, candidate: Candidate, artifact: dict[str, Any], *, cached: bool = True,
                short: bool = False) -> dict[str, Any]:
        """p50/p90 on the device (this machine, or the remote one over SSH), one measurement at a time."""
        settings = dict(self.settings.profile)
        if short:  # a re-measurement round: several of these are interleaved and their medians taken
            settings.update(min_seconds=min(0.3, settings["min_seconds"]), runs=min(20, int(settings["runs"])))
        key = digest("latency", artifact["sha256"], candidate.runtime_options(), self.device, settings)
        if cached:
            found = self.cache.get("latency", key)
            if found is not None:
                return found
        started = time.perf_counter()
        with device_lease(self.device, self.lease_engine):
            report = self._remote_profile(candidate, artifact, settings) if self.settings.remote \
                else self._local_profile(candidate, artifact, settings)
        if report.get("simulated"):  # a vendor simulator's time is no latency objective
            raise EdgekitError(f"{candidate.describe()}: ran on the {report['simulated']}; optimize ranks device "
                               "latencies only: profile on the device (--remote)")
        found = {"p50_ms": report["latency_ms"]["p50"], "p90_ms": report["latency_ms"]["p90"],
                 "engine": report.get("engine"), "threads": report.get("threads"),
                 "execution": report.get("precision"), "device": self.device,
                 "lease": "database" if self.lease_engine is not None else "file lock",
                 "profile_s": round(time.perf_counter() - started, 3)}
        return self.cache.put("latency", key, found) if cached else found

    def _local_profile(self, candidate: Candidate, artifact: dict[str, Any], settings: dict[str, float]) -> dict:
        from edgekit.profiling.profiler import profile
        from edgekit.runtimes import open_runtime

        with open_runtime(artifact["path"], **candidate.runtime_options()) as runtime:
            return profile(runtime, runs=int(settings["runs"]), warmup_seconds=settings["warmup_seconds"],
                           min_seconds=settings["min_seconds"], max_seconds=settings["max_seconds"],
                           energy=False).to_dict(include_samples=False)

    def _remote_profile(self, candidate: Candidate, artifact: dict[str, Any], settings: dict[str, float]) -> dict:
        from edgekit.profiling.remote import SshOptions, parse_remote, profile_remote

        ssh = dict(self.settings.ssh)
        ssh["identity"] = Path(ssh["identity"]) if ssh.get("identity") else None
        ssh["known_hosts"] = Path(ssh["known_hosts"]) if ssh.get("known_hosts") else None
        args = ["--runs", str(int(settings["runs"])), "--warmup-seconds", str(settings["warmup_seconds"]),
                "--min-seconds", str(settings["min_seconds"]), "--max-seconds", str(settings["max_seconds"])]
        for name, value in candidate.runtime_options().items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        report = profile_remote(Path(artifact["path"]), parse_remote(self.settings.remote), SshOptions(**ssh), args)
        return report[0] if isinstance(report, list) else report


def samples_to_prove(drop: float, drop_sd: float | None, budget: float) -> int | None:
    """Validation samples whose upper 95 % bound would hold ``budget`` if the drop and its spread stay as
    measured: ``(z * sd / (budget - drop))**2``; None when the measured drop itself exceeds the budget."""
    if drop_sd is None or drop >= budget:
        return None
    return max(2, math.ceil((Z_95 * drop_sd / (budget - drop)) ** 2))


def _samples_digest(samples: list[Any]) -> str:
    found = hashlib.sha256()
    for sample in samples:
        hash_feeds(found, sample.feeds)
        found.update(str(sample.label).encode())
    return found.hexdigest()[:24]
