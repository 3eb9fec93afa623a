"""The Ethos-U target: the full-int8 .tflite (calibrated and validated like ``tflite-int8``) compiled by Vela.

The compiled file holds an ``ethos-u`` custom op that only the NPU runs, so the
pipeline validates the int8 .tflite it came from and the report says so.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edgekit.converters import work_folder
from edgekit.converters._source import Source
from edgekit.runtimes.errors import ConversionError, UnsupportedModelError, calibration_advice, spelled
from edgekit.runtimes.formats import TFLITE, open_model_file
from edgekit.runtimes.vela import DEFAULT_NPU, compile_for_ethos_u


def convert(
    source: Source,
    target: Any,
    output: Path,
    *,
    calibration: Callable[[], Iterable[dict[str, Any]]] | None = None,
    npu_config: str = DEFAULT_NPU,
    system_config: str | None = None,
    memory_mode: str | None = None,
    require_full_npu: bool = False,
    io: str | None = None,
) -> dict[str, Any]:
    """Write the Vela-compiled model to ``output``; return options, Vela's figures and the int8 model to validate."""
    work = work_folder(output)
    int8 = work / f"{output.stem}_int8.tflite"
    if source.kind != TFLITE:  # Keras, SavedModel, PyTorch, ONNX: the tflite-int8 route of that source
        from edgekit.converters import TARGETS
        from edgekit.converters._tflite import convert as convert_tflite

        if calibration is None:
            raise ConversionError(f"ethos-u needs calibration data for its int8 model: {calibration_advice()}")
        # every op int8: the NPU runs nothing else (what XNNPACK lacks is no reason to keep an op float here)
        convert_tflite(source, TARGETS["tflite-int8"], int8, calibration=calibration, io=io,
                       int8_placement="everywhere")
    else:
        shutil.copyfile(source.path, int8)
    _require_full_int8(int8, source)
    result = compile_for_ethos_u(int8, work / "vela", npu_config=npu_config, system_config=system_config,
                                 memory_mode=memory_mode)
    if require_full_npu and not result.full_npu:
        ops = ", ".join(f"{f['type']} ({f['reason']})" for f in result.cpu_fallbacks) or f"{result.cpu_ops} ops"
        raise ConversionError(f"{spelled('--require-full-npu')}: {result.cpu_ops} op(s) would run on the CPU: {ops}")
    shutil.copyfile(result.output, output)
    details = result.to_dict()
    details.pop("output")
    return {"target": target.name, "npu": details, "require_full_npu": require_full_npu,
            "validated_artifact": str(int8),
            "notes": ["the NPU artifact was not executed (its ethos-u op runs only on the NPU); validation and the "
                      "audit ran on the int8 .tflite it was compiled from"]}


def _require_full_int8(path: Path, source: Source) -> None:
    from edgekit.runtimes.audit import audit_model

    audit = audit_model(open_model_file(path))
    if not audit.integer_compute:
        floats = ", ".join(f"{op}x{n}" for op, n in audit.float_ops.items()) or "all of them"
        raise UnsupportedModelError(
            f"the ethos-u target needs a full-int8 model, and '{source.path.name}' computes in float ({floats}); "
            "convert the original Keras/SavedModel model with --to ethos-u --calib DATA (or make it with "
            "--to tflite-int8 first)"
        )
