"""rknn-int8: a model compiled for a Rockchip RKNPU (RK3588, RK3576, RK3566/3568, RK3562, RV1106/1103) by Rockchip's
rknn-toolkit2, run in its own environment (``_rknn_env``) in a child process, files in and files out: it calls
``exit()`` on some errors. Route: the source as float
ONNX (opset <= 19, the toolkit's limit) -> ``config`` (w8a8, per-channel weights, the chosen platform; no
mean/std: edgekit feeds preprocessed floats, as to every target) -> ``load_onnx`` -> ``build`` calibrated on the
neutral dataset -> ``export_rknn``. Then, in the same session, the toolkit's simulator runs the built model on
the held-out samples: an exported .rknn cannot be run by the simulator later (the toolkit refuses
``load_rknn`` without a board), so this is where its outputs are checked, and the pipeline judges those
outputs against the float model like every target's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edgekit.converters import work_folder
from edgekit.converters._managed_env import run_job, write_samples
from edgekit.converters._onnx_export import export_onnx, lower_opset
from edgekit.converters._rknn_env import find_python
from edgekit.converters._source import Source
from edgekit.runtimes.errors import ConversionError, calibration_advice, spelled
from edgekit.runtimes.npu import RKNN_PLATFORMS

MAX_OPSET = 19
DEFAULT_PLATFORM = "rk3588"
QUANTIZED_ALGORITHMS = ("normal", "mmse", "kl_divergence")  # the toolkit's
TIMEOUT_S = 1800

_BUILD = r"""
import json, sys
import numpy as np
from rknn.api import RKNN
job = json.loads(sys.argv[1])
rknn = RKNN(verbose=False)
def step(name, code):
    if code != 0:
        print(json.dumps({"ok": False, "step": name}), flush=True)
        sys.exit(3)
step("config", rknn.config(target_platform=job["platform"], quantized_dtype="w8a8",
                           quantized_algorithm=job["algorithm"], quantized_method="channel"))
step("load_onnx", rknn.load_onnx(job["onnx"]))
step("build", rknn.build(do_quantization=True, dataset=job["dataset"]))
step("export_rknn", rknn.export_rknn(job["output"]))
step("init_runtime", rknn.init_runtime())
outputs = {}
for index, sample in enumerate(job["held_out"]):
    arrays = [np.load(path) for path in sample]
    got = rknn.inference(inputs=arrays, data_format=["nchw"] * len(arrays))  # the ONNX layout; 4-D only
    if got is None:
        step("inference", 1)
    for position, value in enumerate(got):
        outputs[f"{index}:{position}"] = np.asarray(value)
np.savez(job["outputs"], **outputs)
from importlib.metadata import version
print(json.dumps({"ok": True, "toolkit": version("rknn-toolkit2")}), flush=True)
"""


def convert(source: Source, target: Any, output: Path, *,
            calibration: Callable[[], Iterable[dict[str, Any]]] | None = None,
            validation: Iterable[Any] | None = None, chip: str = DEFAULT_PLATFORM,
            quantized_algorithm: str = "normal", opset: int | None = None) -> dict[str, Any]:
    """Write ``source`` compiled for the Rockchip ``chip`` to ``output``; the simulator's outputs on the held-out
    ``validation`` samples go beside it for the pipeline to judge (``simulated_outputs``)."""
    platform = chip.strip().lower()
    if platform not in RKNN_PLATFORMS:
        raise ConversionError(f"rknn-int8 {spelled('--for', 'chip')}: unknown Rockchip platform '{chip}'; choose "
                              f"one of {', '.join(RKNN_PLATFORMS)}")
    if quantized_algorithm not in QUANTIZED_ALGORITHMS:
        raise ConversionError(f"rknn-int8 quantized_algorithm must be one of {', '.join(QUANTIZED_ALGORITHMS)}, "
                              f"got '{quantized_algorithm}'")
    if calibration is None:
        raise ConversionError(f"rknn-int8 needs calibration data: {calibration_advice()}")
    python = find_python()
    work = work_folder(output).resolve()
    used: dict[str, Any] = {"target": target.name}
    float_path = work / "float.onnx"
    used.update(export_onnx(source, float_path, opset))
    used.update(lower_opset(float_path, MAX_OPSET, "rknn-toolkit2"))
    names = [spec.name for spec in source.inputs]
    dataset = write_samples(work / "calibration", (feeds for feeds in calibration()), names)
    (work / "dataset.txt").write_text("".join(" ".join(files) + "\n" for files in dataset))
    held_out = write_samples(work / "held_out", (sample.feeds for sample in validation or ()), names)
    job = {"platform": platform, "algorithm": quantized_algorithm, "onnx": str(float_path),
           "dataset": str(work / "dataset.txt"), "output": str(output.resolve()), "held_out": held_out,
           "outputs": str(work / "simulated.npz")}
    result = _run(python, job, work)
    used.update(platform=platform, toolkit=f"rknn-toolkit2 {result['toolkit']}", quantized_dtype="w8a8",
                quantized_algorithm=quantized_algorithm, quantized_method="channel",
                calibration_samples=len(dataset),
                preprocessing="none baked in: feed the model what edgekit's recipe makes (mean/std not in the "
                              ".rknn)",
                validated_on=f"rknn-toolkit2 {result['toolkit']} simulator ({platform}): outputs of the model "
                             "built in the same session as the exported file; timings not measured")
    if held_out:
        used["simulated_outputs"] = job["outputs"]
    return used


def _run(python: Path, job: dict[str, Any], work: Path) -> dict[str, Any]:
    result, done = run_job(python, _BUILD, job, work, TIMEOUT_S, "rknn-toolkit2")
    if done.returncode == 0 and result["ok"]:
        return result
    said = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + "\n" + done.stderr)
    # the toolkit logs every build's harmless "E RKNN: Unkown op target: 0"; its real errors start with "E "
    # and its version after an error
    errors = [line[2:].strip() for line in said.splitlines() if line.startswith("E ")
              and "Unkown op target" not in line and "rknn-toolkit2 version" not in line]
    where = f" at {result['step']}" if result.get("step") else ""
    raised = [line for line in said.splitlines() if re.match(r"^\w+(Error|Exception): ", line)]
    why = errors[0] if errors and "Traceback" not in errors[0] else raised[-1] if raised else \
        (said.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    raise ConversionError(f"rknn-toolkit2 failed{where} (exit status {done.returncode}): {why[:400]}")
