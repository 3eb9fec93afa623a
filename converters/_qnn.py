"""qnn-int8: a model compiled ahead of time for a Qualcomm Hexagon HTP, as an ONNX file holding the QNN context.

Route (ONNX Runtime's own, for its QNN execution provider): the source as float ONNX -> ``qnn_preprocess_model``
(fusions the HTP wants) -> QDQ with ``get_qnn_qdq_config`` (QNN's flavour: uint8 activations and weights by
default, 16-bit activations on request) calibrated from the neutral dataset -> a session on the QNN provider
with ``ep.context_enable`` writes an ONNX file with one ``EPContext`` node: the context binary for the chosen
HTP generation. CPU fallback is disabled, so a node the HTP cannot run is an error naming it, never a CPU
island inside an "NPU" artifact. The compile runs in a child process: the vendor library has crashed on
inputs it did not like, and a crash must not take the caller down.

The pipeline then validates the compiled file itself, on the HTP simulator here (``runtimes._qnn``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edgekit.converters import CALIB_METHODS, QNN_ACTIVATION_TYPES, work_folder
from edgekit.converters._onnx_export import CalibrationReader, export_onnx, preprocess_for_quantization, save_onnx
from edgekit.converters._source import Source
from edgekit.runtimes._qnn import META_CHIP, describe_htp
from edgekit.runtimes.errors import (
    ConversionError,
    MissingDependencyError,
    UnsupportedModelError,
    calibration_advice,
    spelled,
)
from edgekit.runtimes.npu import HTP_BY_SOC, htp_generation

log = logging.getLogger("edgekit")

DEFAULT_CHIP = "qcs6490"  # the HTP of the Qualcomm boards people buy for edge work (Rubik Pi 3, RB3 Gen 2)
COMPILE_TIMEOUT_S = 600
#: how the QNN provider's verbose log names a node it will not take, and why
_REFUSAL = re.compile(r"Operator type: (\S+) Node name: (\S+).*?\n\s*REASON : (.+?)(?:\.?\w+ node `.*)?$", re.M)

_COMPILE = """
import json, sys
import onnxruntime as ort
from edgekit.runtimes._qnn import htp_session_options
qdq, context, htp_arch = sys.argv[1:4]
try:
    options = htp_session_options(ort, htp_arch, ep__context_enable="1", ep__context_file_path=context,
                                  ep__context_embed_mode="1")
    options.log_severity_level = 0  # verbose: the provider says there why it refuses a node
    ort.InferenceSession(qdq, options)
    print(json.dumps({"ok": True}))
except Exception as exc:
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    print(json.dumps({"ok": False, "error": lines[0]}))
"""


def remedies(first: Path, samples: Callable[[], Iterable[dict[str, Any]]]):
    """What the QNN route offers when 8-bit activations collapse: 16-bit activations with 8-bit weights."""
    yield "16-bit activations (A16W8)", {"activation_type": "uint16"}, None


def convert(source: Source, target: Any, output: Path, *,
            calibration: Callable[[], Iterable[dict[str, Any]]] | None = None, chip: str = DEFAULT_CHIP,
            calib_method: str = "minmax", activation_type: str = "uint8", per_channel: bool | None = None,
            opset: int | None = None) -> dict[str, Any]:
    """Write ``source`` compiled for the Qualcomm ``chip`` (a SoC such as ``qcs6490``, or ``htp-v73``) to
    ``output``. ``per_channel`` None keeps ONNX Runtime's QNN default (per-tensor)."""
    try:
        import onnxruntime_qnn  # noqa: F401 - only its presence is checked here; the child process loads it
        from onnxruntime.quantization import CalibrationMethod, QuantType, quantize
        from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config, qnn_preprocess_model
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime-qnn (qnn-int8 compiles with it)", "qnn") from exc
    htp_arch = _checked_generation(chip)
    if calibration is None:
        raise ConversionError(f"qnn-int8 needs calibration data: {calibration_advice()}")
    if calib_method not in CALIB_METHODS:
        raise ConversionError(f"{spelled('--calib-method')} must be one of {', '.join(CALIB_METHODS)}, "
                              f"got '{calib_method}'")
    if activation_type not in QNN_ACTIVATION_TYPES:
        raise ConversionError(f"qnn-int8 activations are {' or '.join(QNN_ACTIVATION_TYPES)} "
                              f"({spelled('--activation-type')}), got '{activation_type}'")
    work = work_folder(output)
    used: dict[str, Any] = {"target": target.name}
    float_path, shaped, prepared, qdq = (work / f"{n}.onnx" for n in ("float", "shaped", "prepared", "qdq"))
    used.update(export_onnx(source, float_path, opset))
    notes: list[str] = []
    # the HTP compiler needs every tensor's shape (a YOLO's Resize computes its scales in the graph)
    preprocess_for_quantization(float_path, shaped, notes)
    import onnx

    shaped_model = onnx.load(str(shaped))
    # ORT 1.32's qnn_preprocess_model fails on any metadata_props entry (it updates a dict with the repeated
    # field), and quant_pre_process has just added one
    del shaped_model.metadata_props[:]
    try:
        fused = qnn_preprocess_model(shaped_model, str(prepared))
    except Exception as exc:  # noqa: BLE001 - ORT's graph rewrites assert on graphs they do not expect
        raise ConversionError(f"ONNX Runtime's QNN preprocessing failed: {_first(exc)}") from exc
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    types = {"uint8": QuantType.QUInt8, "uint16": QuantType.QUInt16}
    model_path = prepared if fused else shaped
    extra = {} if per_channel is None else {"per_channel": per_channel}
    try:
        config = get_qnn_qdq_config(str(model_path), CalibrationReader(calibration(), None), methods[calib_method],
                                    activation_type=types[activation_type], weight_type=QuantType.QUInt8, **extra)
        quantize(str(model_path), str(qdq), config)
    except (ValueError, RuntimeError, KeyError, AssertionError) as exc:
        raise ConversionError(f"ONNX Runtime could not quantize the model for QNN: {_first(exc)}") from exc
    _compile(qdq, output, htp_arch, chip)
    _label(output, chip)
    used.update(chip=chip, htp_arch=f"v{htp_arch}", calib_method=calib_method, activation_type=activation_type,
                weight_type="uint8", per_channel=bool(per_channel), format="QNN context binary in an ONNX EPContext",
                cpu_fallback="disabled: every node runs on the HTP", qnn_preprocessing="fused" if fused else "none",
                validated_on=describe_htp(htp_arch), audited_artifact=str(qdq), notes=notes)
    return used


def _checked_generation(chip: str) -> str:
    try:
        return htp_generation(chip)
    except UnsupportedModelError as exc:  # it names the chips; here it is a conversion option
        raise ConversionError(f"qnn-int8 {spelled('--for', 'chip')}: {exc}") from exc


def _first(exc: BaseException) -> str:
    return next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)[:300]


def _compile(qdq: Path, output: Path, htp_arch: str, chip: str) -> None:
    """Compile the QDQ model into a context binary in a child process (ORT refuses to overwrite a context
    file, and the staging path is fresh)."""
    context = output.parent / f".{output.name}-context.onnx"
    try:
        done = subprocess.run([sys.executable, "-c", _COMPILE, str(qdq), str(context), htp_arch],
                              capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, env=dict(os.environ))
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(f"compiling for the Qualcomm {chip} did not finish in {COMPILE_TIMEOUT_S} s") from exc
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else None
    if result is None or not result["ok"]:
        refused = list(dict.fromkeys(f"node '{name}' ({op}): {reason}"
                                     for op, name, reason in _REFUSAL.findall(done.stderr)))
        why = "; ".join(refused[:5]) or (result["error"] if result else
                                          f"the compiler exited with status {done.returncode}: "
                                          + (done.stderr.strip().splitlines() or ["no output"])[-1][:300])
        raise ConversionError(f"qnn-int8: the Qualcomm HTP v{htp_arch} ({chip}) cannot run this model: {why}"
                              + (" (edgekit keeps CPU fallback off, so no node leaves the NPU)" if refused else ""))
    log.debug("QNN compile output:\n%s", done.stderr.strip())
    shutil.move(context, output)


def _label(output: Path, chip: str) -> None:
    """Name the chip in the artifact's metadata (ONNX Runtime records the HTP generation itself)."""
    import onnx

    model = onnx.load(str(output))
    entry = next((p for p in model.metadata_props if p.key == META_CHIP), None) or model.metadata_props.add()
    entry.key, entry.value = META_CHIP, chip if chip in HTP_BY_SOC else f"HTP {chip[4:]}"
    save_onnx(onnx, model, output)
