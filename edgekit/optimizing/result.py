"""After the trials: settle the front, choose, and write what the user keeps.

The feasible non-dominated trials and the baselines are re-measured in interleaved rounds (each round times
every point once, so drift hits all alike); a point's latency is the median of its rounds and its noise floor
the larger of their spread (1.4826 x MAD) and 2 % of that median. Each is re-checked on the held-out split.
The chosen point is the fastest that holds the budget on held-out data (its measured drop, or its upper 95 %
bound with ``require_bound``); points within the noise floor of it count as tied, and among ties the smaller
drop, then the smaller file wins. Every point faster than the chosen one says why it was not chosen.
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit._files import write_atomic
from edgekit.optimizing.cache import matches_sha256
from edgekit.optimizing.evaluate import Settings, samples_to_prove
from edgekit.optimizing.space import Candidate
from edgekit.pareto import non_dominated
from edgekit.runtimes.errors import EdgekitError

NOISE_FLOOR = 0.02  # relative: below this two latencies are not told apart on a shared machine


@dataclass(frozen=True)
class Point:
    trial: int
    target: str
    candidate: dict[str, Any]
    artifact: str
    latency_ms: float
    latency_p90_ms: float
    drop: float
    drop_ucb: float
    size_bytes: int
    feasible: bool
    baseline: str | None = None
    on_front: bool = False
    noise_ms: float | None = None
    heldout_drop: float | None = None
    heldout_drop_ucb: float | None = None
    heldout_samples: int | None = None
    # held-out samples whose bound would prove the budget at the drop measured (None: the drop exceeds it)
    samples_to_prove: int | None = None
    verdict: str = ""  # "chosen", or why a point faster than the chosen one was not
    command: str = ""
    sha256: str = ""  # the artifact's, as measured: the copy to best/ is checked against it

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class OptimizeResult:
    best: Point | None
    front: list[Point]
    trials: list[dict[str, Any]]
    report_path: Path
    trials_run_now: int
    study: str
    storage: str
    budget: float
    basis: str
    cache: dict[str, dict[str, int]] = field(default_factory=dict)
    why_none: str | None = None
    require_bound: bool = False
    shown: list[Point] = field(default_factory=list)  # the front, the baselines and the chosen point, by latency

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best.to_dict() if self.best else None, "front": [p.to_dict() for p in self.front],
                "trials_run_now": self.trials_run_now, "trials": len(self.trials), "study": self.study,
                "storage": safe_url(self.storage), "budget": self.budget, "basis": self.basis,
                "judged_on": "held-out drop's upper 95 % bound" if self.require_bound else "held-out drop",
                "shown": [p.to_dict() for p in self.shown],
                "report": str(self.report_path), "cache": self.cache, "why_none": self.why_none}


def write_outputs(study: Any, evaluator: Any, settings: Any, out: Path, *, run_id: str, storage: str,
                  study_name: str) -> OptimizeResult:

    trials = study.get_trials(deepcopy=False)
    points = [_point(t, settings, reproduce) for t in trials if t.state.name == "COMPLETE"]
    points = _unique(points)
    feasible = [p for p in points if p.feasible]
    # lower is better on latency, drop and size at once
    front_ids = [feasible[i].trial for i in non_dominated([(p.latency_ms, p.drop, p.size_bytes) for p in feasible])]
    chosen_pool = [p for p in points if p.trial in front_ids or (p.baseline and p.feasible)]
    artifacts = {t.number: t.user_attrs["artifact"] for t in trials if t.state.name == "COMPLETE"}
    settled = _settle(evaluator, chosen_pool + [p for p in points if p.baseline and not p.feasible], artifacts)
    points = [settled.get(p.trial, p) for p in points]
    points = [_replace(p, on_front=p.trial in front_ids) for p in points]
    by_trial = {p.trial: p for p in points}
    front = sorted((by_trial[i] for i in front_ids), key=lambda p: p.latency_ms)
    best, why_none = _choose([by_trial[p.trial] for p in chosen_pool], settings)
    shown = _explained(sorted({p.trial: by_trial[p.trial] for p in [*front, *chosen_pool]}.values(),
                              key=lambda p: p.latency_ms), best, settings)
    if best is not None:  # the user's copy, beside the study (the cache keeps every other artifact)
        best = _replace(next(p for p in shown if p.trial == best.trial),
                        artifact=str(_copy_best(best, out / "best")))
        shown = [best if p.trial == best.trial else p for p in shown]
    rows = [_row(t, by_trial.get(t.number)) for t in trials]
    result = OptimizeResult(best, front, rows, out / "optimize.html",
                            sum(1 for t in trials if t.user_attrs.get("run") == run_id
                                and t.state.name in ("COMPLETE", "FAIL")),
                            study_name, storage, settings.budget, evaluator.basis, evaluator.cache.counts(), why_none,
                            settings.require_bound, shown)
    _write_tables(rows, out)
    result_text = json.dumps(result.to_dict(), indent=2, default=str) + "\n"
    write_atomic(out / "result.json", lambda tmp: tmp.write_text(result_text), force=True)
    from edgekit.report.optimize import render

    rankings = {t: evaluator.ranking(t) for t in _ranked_targets(points)}
    html = render(result, points, rankings, float_accuracy=evaluator.float_accuracy("search"),
                  device=evaluator.device)
    write_atomic(out / "optimize.html", lambda tmp: tmp.write_text(html), force=True)
    return result


def _point(trial: Any, settings: Any, reproduce: Any) -> Point:
    attrs = trial.user_attrs
    artifact, accuracy, latency = attrs["artifact"], attrs["accuracy"], attrs["latency"]
    candidate = attrs["candidate"]
    return Point(trial.number, candidate["target"], candidate, artifact["path"], latency["p50_ms"],
                 latency["p90_ms"], accuracy["drop"], accuracy["drop_ucb"], artifact["size_bytes"],
                 all(c <= 0 for c in (trial.constraints or {}).values()), attrs.get("baseline"),
                 command=reproduce(settings, candidate, artifact["options"], artifact["path"]),
                 sha256=artifact.get("sha256", ""))


def _unique(points: list[Point]) -> list[Point]:
    """One point per distinct candidate (a sampler may propose a point twice; the cache made it free)."""
    seen: dict[str, Point] = {}
    for point in points:
        key = json.dumps(point.candidate, sort_keys=True)
        if key not in seen or point.baseline:
            seen[key] = point
    return sorted(seen.values(), key=lambda p: p.trial)


def _settle(evaluator: Any, points: list[Point], artifacts: dict[int, dict[str, Any]]) -> dict[int, Point]:
    """Interleaved re-measurement and the held-out re-check of ``points``."""
    if not points:
        return {}
    rounds: dict[int, list[float]] = {p.trial: [] for p in points}
    candidates = {p.trial: Candidate.from_dict(p.candidate) for p in points}
    for _ in range(evaluator.settings.settle_rounds):
        for p in points:
            measured = evaluator.latency(candidates[p.trial], artifacts[p.trial], cached=False, short=True)
            rounds[p.trial].append(measured["p50_ms"])
    settled = {}
    for p in points:
        median = statistics.median(rounds[p.trial])
        mad = statistics.median(abs(x - median) for x in rounds[p.trial])
        heldout = evaluator.accuracy(candidates[p.trial], artifacts[p.trial], "heldout")
        settled[p.trial] = _replace(p, latency_ms=round(median, 5), noise_ms=round(max(1.4826 * mad,
                                    NOISE_FLOOR * median), 5), heldout_drop=heldout["drop"],
                                    heldout_drop_ucb=heldout["drop_ucb"], heldout_samples=heldout.get("samples"),
                                    samples_to_prove=samples_to_prove(heldout["drop"], heldout.get("drop_sd"),
                                                                      evaluator.settings.budget))
    return settled


def _held_out(point: Point, settings: Any) -> float | None:
    """The held-out figure the budget is judged on (None before the point was re-checked)."""
    if point.heldout_drop is None:
        return None
    return settings.judged({"drop": point.heldout_drop, "drop_ucb": point.heldout_drop_ucb})


def _choose(pool: list[Point], settings: Any) -> tuple[Point | None, str | None]:
    budget = settings.budget
    holding = [p for p in pool if (judged := _held_out(p, settings)) is not None and judged <= budget]
    if not holding:
        if not pool:
            return None, f"no trial held the budget of {budget:g} on the search data"
        return None, f"no front point held the budget of {budget:g} on the held-out data"
    # tied: no holding point is measurably faster. Judged against every one, not just the fastest: a noisy
    # fastest point would otherwise let through a point measurably slower than a third (a default int8, say).
    tied = [p for p in holding if all(p.latency_ms - q.latency_ms <= _noise(p, q) for q in holding)]
    return min(tied, key=lambda p: (p.drop, p.size_bytes, p.latency_ms)), None


def _noise(a: Point, b: Point) -> float:
    """Below this two settled latencies are not told apart."""
    return max(a.noise_ms or 0, b.noise_ms or 0)


def _explained(points: list[Point], best: Point | None, settings: Any) -> list[Point]:
    """``points`` with their verdicts: "chosen", or for each one faster than the chosen point (every one when
    none was chosen) why it was not, its measured drop beside its bound."""
    budget = settings.budget

    def why(p: Point) -> str:
        if best is not None and p.trial == best.trial:
            return "chosen"
        if best is not None and p.latency_ms >= best.latency_ms:
            return ""
        if not p.feasible:
            return (f"search drop {p.drop:.2f} (bound {p.drop_ucb:.2f}) over the budget {budget:g}"
                    if not settings.require_bound else
                    f"search bound {p.drop_ucb:.2f} over the budget {budget:g} (drop {p.drop:.2f})")
        if p.heldout_drop is None:
            return "not re-checked on held-out data"
        if p.heldout_drop > budget:
            return f"held-out drop {p.heldout_drop:.2f} over the budget {budget:g}"
        if settings.require_bound and p.heldout_drop_ucb > budget:
            more = (f"; about {p.samples_to_prove} held-out samples would prove it at this drop"
                    if p.samples_to_prove else "")
            return (f"held-out bound {p.heldout_drop_ucb:.2f} over the budget {budget:g} with "
                    f"{p.heldout_samples} samples (measured drop {p.heldout_drop:.2f} holds it){more}")
        return (f"tied within noise ({p.latency_ms:.4f} vs {best.latency_ms:.4f} ms ± {_noise(p, best):.4f}); "
                f"the chosen point has the smaller drop or file") if best else "holds the budget"

    return [_replace(p, verdict=why(p)) for p in points]


def _replace(point: Point, **changes: Any) -> Point:
    return Point(**{**point.__dict__, **changes})


def _row(trial: Any, point: Point | None) -> dict[str, Any]:
    attrs = trial.user_attrs
    artifact, accuracy, latency = attrs.get("artifact", {}), attrs.get("accuracy", {}), attrs.get("latency", {})
    return {
        "trial": trial.number, "state": trial.state.name.lower(), "baseline": attrs.get("baseline"),
        "target": (attrs.get("candidate") or {}).get("target"), "candidate": attrs.get("candidate"),
        "latency_ms": latency.get("p50_ms"), "latency_p90_ms": latency.get("p90_ms"),
        "settled_latency_ms": point.latency_ms if point and point.noise_ms is not None else None,
        "noise_ms": point.noise_ms if point else None,
        "drop": accuracy.get("drop"), "drop_ucb": accuracy.get("drop_ucb"), "accuracy": accuracy.get("accuracy"),
        "heldout_drop": point.heldout_drop if point else None,
        "heldout_drop_ucb": point.heldout_drop_ucb if point else None,
        "size_bytes": artifact.get("size_bytes"), "feasible": point.feasible if point else None,
        "on_front": point.on_front if point else False, "artifact": artifact.get("path"),
        "convert_s": artifact.get("convert_s") if not artifact.get("cached") else 0.0,
        "validate_s": accuracy.get("validate_s"), "profile_s": latency.get("profile_s"),
        "converted_now": artifact.get("cached") is False, "error": attrs.get("error"),
        "device": latency.get("device"), "worker": attrs.get("worker"), "run": attrs.get("run"),
        "command": point.command if point else None,
    }


def _write_tables(rows: list[dict[str, Any]], out: Path) -> None:
    write_atomic(out / "trials.json", lambda tmp: tmp.write_text(json.dumps(rows, indent=1, default=str) + "\n"),
                 force=True)
    columns = [c for c in rows[0] if c != "candidate"] if rows else []

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    write_atomic(out / "trials.csv", write_csv, force=True)


def _copy_best(best: Point, folder: Path) -> Path:
    """The winner and its conversion report into ``folder``; returns the artifact's new path. The copy is
    checked against the sha256 the search measured: a file swapped in the cache since is not shipped."""
    source = Path(best.artifact)
    staging = Path(tempfile.mkdtemp(prefix=".best-", dir=folder.parent))
    try:
        for companion in [source, source.with_suffix(".bin")]:
            if companion.is_file():
                shutil.copyfile(companion, staging / companion.name)
        if not matches_sha256(staging / source.name, best.sha256):
            raise EdgekitError(f"the chosen artifact {source} changed on disk after it was measured (its sha256 is "
                               "not the one recorded); nothing was copied to best/: delete the cache folder and "
                               "run the search again")
        report_path = Path(f"{source}.json")
        if report_path.is_file():  # the conversion report, plus what the search measured and why it was chosen
            report = json.loads(report_path.read_text())
            report["artifact"]["path"] = str(folder / source.name)
            report["optimize"] = {k: v for k, v in best.to_dict().items() if k != "artifact"}
            (staging / report_path.name).write_text(json.dumps(report, indent=2, default=str) + "\n")
        if folder.is_symlink() or folder.is_file():  # never followed: best/ is ours to replace
            folder.unlink()
        elif folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder / source.name


def _ranked_targets(points: list[Point]) -> list[str]:
    return sorted({p.target for p in points if p.candidate.get("kept_float")})


def safe_url(url: str, text: str | None = None) -> str:
    """``text`` (default: the storage URL itself) with the URL's password replaced by ``***``: for messages
    and files. Found however malformed the rest of the URL is (a database driver's error quotes it whole)."""
    from urllib.parse import quote, unquote

    text = url if text is None else text
    userinfo, at, _ = url.split("://", 1)[-1].rpartition("@")
    password = userinfo.split(":", 1)[1] if at and ":" in userinfo else ""
    for form in {password, unquote(password), quote(password, safe="")} - {""}:
        text = text.replace(form, "***")
    return text


def reproduce(settings: Settings, candidate: dict[str, Any], options: dict[str, Any], artifact: str) -> str:
    """The commands that rebuild and re-measure one point by hand."""
    import shlex

    flags = {"io": "--io", "calib_method": "--calib-method", "preset": "--preset"}
    parts = ["edgekit", "convert", settings.model, "--to", candidate["target"], "--calib", settings.calibration,
             "--calib-size", str(settings.calib_size), "--seed", str(settings.seed)]
    parts += ["--val-size", str(settings.val_size)] if settings.val_size else []
    for name, shape in settings.input_shapes.items():
        parts += ["--input-shape", f"{name}:{','.join(map(str, shape))}"]
    recipe = settings.recipe
    for key in ("size", "crop"):
        parts += [f"--{key}", "x".join(map(str, recipe[key]))] if recipe.get(key) else []
    for key in ("mean", "std"):
        parts += [f"--{key}", ",".join(map(str, recipe[key]))] if recipe.get(key) else []
    parts += ["--scale", repr(recipe["scale"])] if "scale" in recipe else []
    parts += ["--color", recipe["color"]] if recipe.get("color") else []
    parts += ["--layout", recipe["layout"]] if recipe.get("layout") else []
    parts += ["--name", settings.name] if settings.name else []
    parts += ["--trust-pickle"] if settings.trust_pickle else []
    for name, value in options.items():
        if name in flags:
            parts += [flags[name], str(value)]
        elif name == "per_channel":
            parts.append("--per-channel" if value else "--per-tensor")
        elif name == "keep_output_float" and value:
            parts.append("--keep-output-float")
        elif name == "allow_float_ops":
            parts.append("--allow-float-ops" if value else "--integer-only")
        elif name in ("exclude_nodes", "ignored_names"):
            parts += ["--" + name.replace("_", "-"), ",".join(value)]
    parts += ["-o", "reproduced"]
    profile = ["edgekit", "profile", f"reproduced/{Path(artifact).name}"]
    for name in ("threads", "precision", "graph_optimization"):
        if candidate.get(name) is not None:
            profile += [f"--{name.replace('_', '-')}", str(candidate[name])]
    profile += ["--remote", settings.remote] if settings.remote else []
    return " ".join(map(shlex.quote, parts)) + " && " + " ".join(map(shlex.quote, profile))
