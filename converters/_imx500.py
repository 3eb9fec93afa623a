"""imx500: a model for the Sony IMX500's on-sensor NPU (the Raspberry Pi AI Camera), built with Sony's tools in
their own environment (``_imx500_env``), in child processes: files in, files out.

Route: the source as float ONNX (edgekit's export, as for every NPU; opset <= 17) -> exact rewrites into what
onnx2torch reads (``_for_onnx2torch``) -> onnx2torch -> its Resize/Slice/Reshape modules with constant inputs made
the plain torch calls they make, which torch.fx can trace (in ``_QUANTIZE``) -> MCT's post-training quantization
with the IMX500 target platform
(TPC v1: power-of-two activation thresholds, 8-bit symmetric per-channel weights), calibrated on the neutral
dataset -> MCT's ONNX export -> ``imxconv-pt`` -> ``packerOut.zip`` (renamed ``<stem>_imx500_packerOut.zip``)
and the converter's memory report. On the Pi, ``imx500-package`` turns the zip into ``network.rpk``.

No simulator of the sensor exists: what is checked here is MCT's quantized model (fake-quant in PyTorch, in the
same child process), run on the held-out samples; the pipeline judges those outputs against the float model
like any int8 target's, and the report says the sensor itself was not run.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from edgekit.converters import work_folder
from edgekit.converters._imx500_env import check_image_input, check_java, converter_command, find_python
from edgekit.converters._managed_env import run_job, write_samples
from edgekit.converters._onnx_export import export_onnx, lower_opset, preprocess_for_quantization, save_onnx
from edgekit.converters._onnx_rewrite import drop_unread_initializers
from edgekit.converters._source import Source
from edgekit.runtimes.errors import ConversionError, UnsupportedModelError, calibration_advice
from edgekit.runtimes.formats import imx500_tensors
from edgekit.runtimes.npu import IMX500_MEMORY_BYTES

MAX_OPSET = 17  # onnx2torch 1.5's newest op versions (ReduceMean 13: opset 18 made its axes an input)
MEMORY_REPORT = "_MemoryReport.json"  # beside the package: <stem>_imx500_MemoryReport.json
QUANTIZE_TIMEOUT_S = 3600
CONVERT_TIMEOUT_S = 3600

_QUANTIZE = r"""
import functools, json, operator, sys
job = json.loads(sys.argv[1])
def say(**fields):
    print(json.dumps(fields), flush=True)
def fail(step, exc):
    chain, seen = [], exc
    while seen is not None and len(chain) < 4:
        chain += [line.strip() for line in str(seen).splitlines() if line.strip()]
        seen = seen.__cause__ or seen.__context__
    say(ok=False, step=step, error=f"{type(exc).__name__}: {' / '.join(dict.fromkeys(chain))}"[:800])
    sys.exit(3)
import numpy as np
import torch
def traceable(model):
    # onnx2torch's Resize, Slice and Reshape read their constant inputs' values while running, which torch.fx
    # (MCT's reader) cannot trace: each with constant inputs becomes the plain torch call it would make
    counts = {"OnnxResize": 0, "OnnxSlice": 0, "OnnxReshape": 0}
    for node in list(model.graph.nodes):
        kind = type(model.get_submodule(node.target)).__name__ if node.op == "call_module" else None
        if kind not in counts:
            continue
        names = {"OnnxResize": ("roi", "scales", "sizes"), "OnnxSlice": ("starts", "ends", "axes", "steps"),
                 "OnnxReshape": ("shape",)}[kind]
        given = dict(zip(names, node.args[1:]), **node.kwargs)  # onnx2torch passes them either way
        values = {name: constant(model, arg) for name, arg in given.items()}
        if any(value is None for name, value in values.items() if given[name] is not None):
            continue  # computed while running: left as it is
        call = {"OnnxResize": resize_call, "OnnxSlice": slice_call, "OnnxReshape": reshape_call}[kind](
            model.get_submodule(node.target), **values)
        if call is None:
            continue
        with model.graph.inserting_before(node):
            plain = model.graph.call_function(call[0], (node.args[0], *call[1]), call[2])
        node.replace_all_uses_with(plain)
        model.graph.erase_node(node)
        counts[kind] += 1
    model.recompile()
    return {kind[4:].lower(): count for kind, count in counts.items() if count}
def resize_call(resize, roi=None, scales=None, sizes=None):
    modes = {("nearest", 1): "nearest", ("nearest", 2): "nearest", ("linear", 1): "linear", ("linear", 2): "bilinear"}
    shape = scales or sizes
    mode = modes.get((resize.onnx_mode, len(shape) - 2)) if shape else None
    if mode is None or (scales and scales[:2] != [1, 1]):
        return None
    return torch.nn.functional.interpolate, (), {
        "scale_factor": tuple(scales[2:]) if scales else None, "size": tuple(int(s) for s in sizes[2:]) if sizes
        else None, "mode": mode, "align_corners": resize.align_corners}
def slice_call(module, starts, ends, axes=None, steps=None):
    axes, steps = axes or list(range(len(starts))), steps or [1] * len(starts)
    if min(axes) < 0 or min(steps) < 1:
        return None
    index = [slice(None)] * (max(axes) + 1)
    for axis, start, end, step in zip(axes, starts, ends, steps):
        index[axis] = slice(int(start), None if end >= 2 ** 62 else int(end), int(step))
    return operator.getitem, (tuple(index),), {}
def reshape_call(module, shape):
    return (torch.reshape, (tuple(int(d) for d in shape),), {}) if 0 not in shape else None
def constant(model, arg):
    if getattr(arg, "op", None) != "get_attr":
        return None
    value = model
    for part in arg.target.split("."):
        value = getattr(value, part)
    return value.tolist() if value.numel() else None
try:
    from onnx2torch import convert
    model = convert(job["onnx"]).eval()
    made_plain = traceable(model)
except Exception as exc:
    fail("onnx2torch", exc)
import model_compression_toolkit as mct
def samples(files):
    def batches():
        for sample in files:
            yield [torch.from_numpy(np.load(path)) for path in sample]
    return batches
try:
    tpc = mct.get_target_platform_capabilities("pytorch", "imx500")
    quantized, _ = mct.ptq.pytorch_post_training_quantization(model, samples(job["calibration"]),
                                                               target_platform_capabilities=tpc)
except Exception as exc:
    fail("quantize", exc)
outputs = {}
with torch.no_grad():
    for index, sample in enumerate(samples(job["held_out"])()):
        got = quantized(*sample)
        for position, value in enumerate(got if isinstance(got, (list, tuple)) else [got]):
            outputs[f"{index}:{position}"] = value.detach().cpu().numpy()
np.savez(job["outputs"], **outputs)
# MCT 2.5's exporter calls torch.onnx.export with torch's default exporter, the dynamo one from torch 2.9 on,
# which cannot write MCT's quantizer ops: it is given the TorchScript exporter it was written for
torch.onnx.export = functools.partial(torch.onnx.export, dynamo=False)
try:
    mct.exporter.pytorch_export_model(quantized, save_model_path=job["quantized"],
                                      repr_dataset=samples(job["calibration"][:1]))
except Exception as exc:
    fail("export", exc)
from importlib.metadata import version
say(ok=True, tpc=f"{tpc.tpc_platform_type} v{tpc.tpc_minor_version}", made_plain=made_plain,
    versions={name: version(name) for name in ("model-compression-toolkit", "imx500-converter", "onnx2torch",
                                               "torch")})
"""


def convert(source: Source, target: Any, output: Path, *,
            calibration: Callable[[], Iterable[dict[str, Any]]] | None = None,
            validation: Iterable[Any] | None = None, opset: int | None = None) -> dict[str, Any]:
    """Write ``source`` quantized by MCT and converted for the IMX500 to ``output`` (the converter's
    packerOut.zip), its memory report beside it; MCT's quantized model's outputs on the held-out
    ``validation`` samples go beside them for the pipeline to judge (``simulated_outputs``)."""
    if calibration is None:
        raise ConversionError(f"imx500 needs calibration data: {calibration_advice()}")
    check_image_input(source)
    python = find_python()
    imxconv = converter_command(python)
    java = check_java()
    work = work_folder(output).resolve()
    stem = output.name.removesuffix(target.extension)
    used: dict[str, Any] = {"target": target.name}
    float_path = work / "float.onnx"
    used.update(export_onnx(source, float_path, opset or MAX_OPSET))
    used.update(lower_opset(float_path, MAX_OPSET, "onnx2torch"))
    notes: list[str] = []
    graph = _for_onnx2torch(float_path, notes)
    _check_weights_fit(graph["parameters"])
    names = [spec.name for spec in source.inputs]
    dataset = write_samples(work / "calibration", (feeds for feeds in calibration()), names)
    held_out = write_samples(work / "held_out", (sample.feeds for sample in validation or ()), names)
    quantized = work / f"{stem}.onnx"  # its name becomes the network's name on the sensor
    job = {"onnx": str(float_path), "calibration": dataset, "held_out": held_out, "quantized": str(quantized),
           "outputs": str(work / "simulated.npz")}
    result = _quantize(python, job, work)
    converted = work / "converted"
    _run_converter(imxconv, quantized, converted)
    memory = _memory_report(converted / f"{stem}{MEMORY_REPORT}")
    if not memory["fits"]:
        raise ConversionError(
            f"imx500: '{source.path.name}' does not fit on the IMX500: it needs {_mb(memory['used_bytes'])} of the "
            f"chip's {_mb(memory['available_bytes'])} ({memory['utilization']}; weights "
            f"{_mb(memory['model_bytes'])}, activations {_mb(memory['runtime_bytes'])}); choose a smaller model or "
            "input size")
    (converted / "packerOut.zip").replace(output)
    (converted / f"{stem}{MEMORY_REPORT}").replace(output.with_name(stem + MEMORY_REPORT))
    versions = result["versions"]
    used.update(
        toolkit=f"model-compression-toolkit {versions['model-compression-toolkit']} (target platform "
                f"{result['tpc']}), imx500-converter {versions['imx500-converter']}",
        tool_versions={**versions, "java": java}, calibration_samples=len(dataset), **graph,
        plain_torch_calls=result["made_plain"],
        quantization=_mct_quantizers(quantized),
        chip_memory={**memory, "fits": True, "summary": f"fits on the chip: yes, {memory['utilization']} of "
                                                         f"{_mb(memory['available_bytes'])}"},
        camera_input=_camera_input(output),
        validated_on=f"quantized model of MCT {versions['model-compression-toolkit']} (fake-quant, in PyTorch): the "
                     "IMX500 itself was not run (no simulator of the sensor exists); timings not measured")
    if notes:
        used["notes"] = notes
    if "warning" in used["camera_input"]:
        used["warnings"] = [used["camera_input"].pop("warning")]
    if held_out:
        used["simulated_outputs"] = job["outputs"]
    return used


def _for_onnx2torch(path: Path, notes: list[str]) -> dict[str, Any]:
    """Rewrite the float ONNX at ``path`` into the graph onnx2torch and MCT's torch.fx trace take, in place, and
    count its weights. ONNX Runtime's basic optimizations fold shape arithmetic (Shape -> Slice -> Concat ->
    Reshape, which torch.fx cannot trace) and BatchNorm into convolutions; then each node is rewritten exactly
    where onnx2torch needs it (``_weight_of``, ``_without_allowzero``, ``_as_multiplication``)."""
    import onnx

    preprocess_for_quantization(path, path, notes)
    model = onnx.load(str(path))
    weights = {t.name: t for t in model.graph.initializer}
    kept, reciprocals = [], 0
    for node in model.graph.node:
        weight = _weight_of(onnx, node, weights)
        if weight is not None:
            model.graph.initializer.append(weight)
            weights[weight.name] = weight
            continue
        _without_allowzero(node, weights)
        reciprocal = _as_multiplication(node, weights)
        if reciprocal is not None:
            reciprocals += 1
            if reciprocal.name not in weights:
                model.graph.initializer.append(reciprocal)
                weights[reciprocal.name] = reciprocal
        kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    drop_unread_initializers(model.graph)  # a divisor made a reciprocal
    save_onnx(onnx, model, path)
    counted = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    return {"parameters": counted, "divisions_as_multiplications": reciprocals}


def _weight_of(onnx: Any, node: Any, weights: dict[str, Any]) -> Any:
    """A Constant node's value, or an Identity node's weight (torch's exporter shares folded biases that way), as
    an initializer named after the node's output: onnx2torch reads weights from initializers only."""
    if node.op_type == "Constant" and [a.name for a in node.attribute] == ["value"]:
        source = node.attribute[0].t
    elif node.op_type == "Identity" and node.input[0] in weights:
        source = weights[node.input[0]]
    else:
        return None
    tensor = onnx.TensorProto()
    tensor.CopyFrom(source)
    tensor.name = node.output[0]
    return tensor


def _without_allowzero(node: Any, weights: dict[str, Any]) -> None:
    """``allowzero=1`` (torch's exporter sets it; onnx2torch refuses it) changes nothing in a reshape to a constant
    shape without a 0: dropped there."""
    from onnx import numpy_helper

    if node.op_type == "Reshape" and node.input[1] in weights and \
            0 not in numpy_helper.to_array(weights[node.input[1]]).tolist():
        kept = [a for a in node.attribute if a.name != "allowzero"]
        del node.attribute[:]
        node.attribute.extend(kept)


def _as_multiplication(node: Any, weights: dict[str, Any]) -> Any:
    """A division by a float constant made a multiplication by its reciprocal (onnx2torch's Div branches on dtypes,
    which torch.fx cannot trace); the reciprocal's initializer, or None when the node is no such division."""
    from onnx import TensorProto, numpy_helper

    divisor = weights.get(node.input[1]) if node.op_type == "Div" else None
    if divisor is None or divisor.data_type != TensorProto.FLOAT:
        return None
    reciprocal = numpy_helper.from_array(np.float32(1) / numpy_helper.to_array(divisor), f"{divisor.name}_reciprocal")
    node.op_type, node.input[1] = "Mul", reciprocal.name
    return reciprocal


def _check_weights_fit(parameters: int) -> None:
    """Before the long conversion: at 8 bits per weight, weights alone over the chip's memory cannot fit."""
    if parameters > IMX500_MEMORY_BYTES:
        raise ConversionError(
            f"imx500: the model has {parameters / 1e6:.1f} M weights: at 8 bits they alone need {_mb(parameters)}, "
            f"more than the IMX500's {_mb(IMX500_MEMORY_BYTES)} (with activations besides); choose a smaller model")


def _quantize(python: Path, job: dict[str, Any], work: Path) -> dict[str, Any]:
    result, done = run_job(python, _QUANTIZE, job, work, QUANTIZE_TIMEOUT_S, "imx500: MCT")
    if done.returncode == 0 and result["ok"]:
        return result
    if result.get("step") == "onnx2torch":
        raise ConversionError(f"imx500: onnx2torch cannot turn this ONNX graph into PyTorch for MCT "
                              f"({result['error']}); the route takes ONNX ops onnx2torch converts")
    if result.get("step"):
        raise ConversionError(f"imx500: MCT failed at {result['step']}: {result['error']}")
    said = [line for line in done.stderr.splitlines() if line.strip()]
    raise ConversionError(f"imx500: the MCT process ended with exit status {done.returncode}: "
                          f"{(said or ['no output'])[-1][:400]}")


#: imxconv-pt's error lines: "<time> ERROR: CODE: [GE] <message>" (sdspconv) or "<time> ERROR : <message>" (uni)
_ERROR = re.compile(r"\bERROR\s*:\s*(?:CODE: \[\w+\]\s*)?(.+?)(?:\s*\[/\S+\])?\s*$")
_NOT_A_REASON = ("Failure in conversion process", "sdspconv exited with error code", "Exception in thread")


def _run_converter(imxconv: Path, quantized: Path, folder: Path) -> None:
    command = [str(imxconv), "-i", str(quantized), "-o", str(folder), "--overwrite-output", "--report-size-unit", "B"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(f"imx500: imxconv-pt did not finish within {CONVERT_TIMEOUT_S} s") from exc
    if done.returncode == 0 and (folder / "packerOut.zip").is_file():
        return
    said = (done.stdout + "\n" + done.stderr).splitlines()
    reasons = [m.group(1) for m in map(_ERROR.search, said) if m and not m.group(1).startswith(_NOT_A_REASON)]
    why = (reasons[0] if reasons else (said or [f"exit status {done.returncode}"])[-1]).strip()
    unsupported = re.search(r"unsupported ops: (.+)", why)
    if unsupported:
        kinds = [kind.strip() for kind in unsupported.group(1).split(",")]
        layers = [node.name for node in _nodes(quantized) if node.op_type in kinds][:5]
        raise ConversionError(f"imx500: the IMX500 cannot run {', '.join(kinds)} (layer(s) {', '.join(layers)}): "
                              "replace them in the model (GELU's Erf: the tanh approximation or hard-swish)")
    if "Not enough memory" in why:
        raise ConversionError(f"imx500: the model does not fit on the IMX500 ({why[:300]}; the converter's tiling "
                              "advisor found no way to split it): choose a smaller model or input size")
    raise ConversionError(f"imx500: imxconv-pt failed (exit status {done.returncode}): {why[:400]}")


def _memory_report(path: Path) -> dict[str, Any]:
    try:
        report = json.loads(path.read_text())["Memory Report"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConversionError(f"imx500: imxconv-pt wrote no readable memory report ({path.name}): {exc}") from exc

    def size(key: str) -> int:
        return int(float(re.sub(r"[^0-9.]", "", str(report[key])) or 0))

    return {"fits": report.get("Fit In Chip") is True, "used_bytes": size("Memory Usage"),
            "available_bytes": size("Total Memory Available On Chip"),
            "model_bytes": size("Model Memory Physical Size"), "runtime_bytes": size("Runtime Memory Physical Size"),
            "utilization": str(report.get("Memory Utilization")), "input_persistent": report.get("Input Persistent")}


def _camera_input(package: Path) -> dict[str, Any]:
    """What the sensor must feed the network, as the package's dnnParams.xml declares its input tensor: its size,
    and how its 8-bit values are read (value x scale)."""
    try:
        (tensor,), _ = imx500_tensors(package)
    except (UnsupportedModelError, ValueError):  # none, or several: nothing to say about the camera's input
        return {"known": False}
    unsigned, scale = tensor.dtype == np.uint8, tensor.scale
    described = {"known": True, "shape_chw": list(tensor.shape), "format": "unsigned" if unsigned else "signed",
                 "bits": 8, "scale": scale}
    if unsigned:
        return {**described, "reads": f"8-bit values read as value x {scale:g}: the network takes inputs in "
                                      f"[0, {255 * scale:g}]"}
    return {**described, "reads": f"8-bit signed values read as value x {scale:g}: the network takes inputs in "
                                  f"[{-128 * scale:g}, {127 * scale:g}]",
            "warning": f"imx500: the network takes signed inputs (8-bit, scale {scale:g}): it was calibrated on "
                       "normalized images (the report's recipe has their mean/std), and camera pixels reach it only "
                       "through the sensor's input normalization: set that to the recipe's mean/std when you package "
                       "network.rpk, or fold the normalization into the model and calibrate it on images in [0, 1]"}


def _nodes(path: Path) -> list[Any]:
    import onnx

    try:
        return list(onnx.load(str(path)).graph.node)
    except Exception:  # noqa: BLE001 - only names for a message: an unreadable file names none
        return []


def _mct_quantizers(path: Path) -> dict[str, Any]:
    """What MCT's export quantized: its weight and activation quantizer nodes, by kind and bit width."""
    import onnx

    model = onnx.load(str(path))
    kinds: Counter = Counter()
    for node in model.graph.node:
        if node.domain == "mct_quantizers":
            bits = next((a.i for a in node.attribute if a.name == "num_bits"), None)
            kinds[f"{node.op_type} {bits}-bit"] += 1
    return {"quantizers": dict(kinds), "weights_quantized": sum(n for k, n in kinds.items() if k.startswith("Weights")),
            "activations_quantized": sum(n for k, n in kinds.items() if k.startswith("Activation"))}


def _mb(size: float) -> str:
    return f"{size / (1 << 20):.2f} MB"
