"""Quantize a float .tflite with ai-edge-quantizer (no TensorFlow): fp16 weights, dynamic-range, int8, 16x8.

The float file comes from litert-torch (PyTorch sources), onnx2tf (ONNX sources) or the user (a float
.tflite source). ai-edge-quantizer calibrates through the model's signature runner, so the file needs a
SignatureDef; its static recipes make the I/O integer too, which edgekit keeps for tflite-int8 (as the
TFLite converter's int8 I/O) and turns off for 16x8 and ``io="float"``.
"""

from __future__ import annotations

import contextlib
import io as _io
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from edgekit.runtimes.errors import ConversionError, MissingDependencyError, calibration_advice, first_line, spelled
from edgekit.runtimes.litert_interpreter import implementation_version

#: ops that only move data: an output's float "head" follows them back to the op that computed it
DATA_MOVEMENT = {"RESHAPE", "TRANSPOSE", "CONCATENATION", "SQUEEZE", "EXPAND_DIMS", "PACK", "UNPACK", "SPLIT",
                  "SPLIT_V", "SLICE", "STRIDED_SLICE", "GATHER", "DEQUANTIZE", "QUANTIZE"}
#: weights ai-edge-quantizer casts to float16 for tflite-fp16 (other float constants stay float32)
_FP16_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D_TRANSPOSE", "EMBEDDING_LOOKUP")


def _imports() -> tuple[Any, Any]:
    try:
        from ai_edge_quantizer import quantizer, recipe
    except ImportError as exc:
        raise MissingDependencyError("ai-edge-quantizer (quantizes .tflite files without TensorFlow)",
                                     "torch") from exc
    return quantizer, recipe


def _signature(path: Path) -> tuple[str, dict[str, np.dtype]]:
    from ai_edge_litert.interpreter import Interpreter  # ai-edge-quantizer's own dependency

    interpreter = Interpreter(model_path=str(path))
    signatures = interpreter.get_signature_list()
    if not signatures:
        raise ConversionError(f"'{path.name}' has no SignatureDef, which ai-edge-quantizer needs to calibrate; "
                              "convert from the original model (Keras, SavedModel, PyTorch or ONNX)")
    key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
    details = interpreter.get_signature_runner(key).get_input_details()
    return key, {name: np.dtype(d["dtype"]) for name, d in details.items()}


def output_head(float_path: Path) -> list[str]:
    """The ops that compute the model's outputs, each named by its output tensors joined by ';' (the sensitivity
    ranking's ``node``): each output's producer, followed back through data-movement ops (a detector's concat
    of 0-640 boxes and 0-1 scores) to the op that computed it."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(float_path))
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    producer = {out: op for op in interpreter._get_ops_details() for out in op["outputs"]}
    stack, seen, head = [d["index"] for d in interpreter.get_output_details()], set(), []
    while stack:
        op = producer.get(stack.pop())
        if op is None or op["index"] in seen:
            continue
        seen.add(op["index"])
        head.append(";".join(names[o] for o in op["outputs"] if o >= 0))
        if op["op_name"] in DATA_MOVEMENT:
            stack += [i for i in op["inputs"] if i >= 0]
    return head


def op_scopes_regex(nodes: Iterable[str]) -> str:
    """A regex matching exactly these ops' scopes. ai-edge-quantizer scopes an op by its output tensor names,
    each followed by ';', and searches the regex in it; tensor names may hold ';' themselves (litert-torch's
    ``<module path>;<index>``), so only the whole scope, anchored, names one op (a component would match every
    op that shares it)."""
    return "^(?:" + "|".join(re.escape(f"{node};") for node in nodes) + ")$"


#: tflite-w4's recipe per group size (None: one scale per output channel). The "dynamic" recipes quantize the
#: activations on the fly and use XNNPACK's int4 x int8 kernels; AEQ's weight_only_wi4_afp32 dequantizes the
#: weights and multiplies in float, and issue 31 measured it slower than fp32 (11.7 vs 4.5 ms).
W4_RECIPES = {None: "dynamic_wi4_afp32", 32: "dynamic_wi4b32_afp32", 64: "dynamic_wi4b64_afp32"}


def _configure(engine: Any, recipe: Any, variant: str, io: str, keep_float: tuple[str, ...] = (),
               float_scopes: list[str] | None = None, group_size: int | None = None) -> None:
    from ai_edge_quantizer import qtyping

    algorithms, ops = recipe.AlgorithmName, qtyping.TFLOperationName
    if variant == "dynamic":
        engine.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    elif variant == "w4":
        engine.load_quantization_recipe(getattr(recipe, W4_RECIPES[group_size])())
    elif variant == "fp16":
        for op in _FP16_OPS:
            engine.add_weight_only_config(regex=".*", operation_name=getattr(ops, op), num_bits=16,
                                          algorithm_key=algorithms.FLOAT_CASTING)
    else:
        engine.load_quantization_recipe(recipe.static_wi8_ai8() if variant == "int8" else recipe.static_wi8_ai16())
        floats = [*keep_float, *(("INPUT", "OUTPUT") if io == "float" else ())]  # float I/O: Q/DQ at the edges
        for op in floats:
            engine.update_quantization_recipe(regex=".*", operation_name=getattr(ops, op),
                                              algorithm_key=algorithms.NO_QUANTIZE)
        if float_scopes:
            engine.update_quantization_recipe(regex=op_scopes_regex(float_scopes), operation_name=ops.ALL_SUPPORTED,
                                              algorithm_key=algorithms.NO_QUANTIZE)


def quantize(float_path: Path, output: Path, variant: str, *,
             calibration: Callable[[], Iterable[dict[str, Any]]] | None, io: str | None,
             keep_output_float: bool = False, exclude_nodes: tuple[str, ...] = (),
             keep_float_ops: tuple[str, ...] = (), group_size: int | None = None) -> dict[str, Any]:
    """Write ``variant`` (fp16, dynamic, w4, int8 or int16x8) of the float model at ``float_path`` to ``output``;
    ``keep_output_float`` leaves the ops computing the outputs (``output_head``) in float, ``exclude_nodes``
    the ops named by their output tensors (joined by ';' for an op with several: the ranking's ``node``),
    ``keep_float_ops`` every op of these types."""
    quantizer, recipe = _imports()
    from ai_edge_quantizer import qtyping

    keep_float_ops = tuple(op for op in keep_float_ops if hasattr(qtyping.TFLOperationName, op))  # others stay float
    used: dict[str, Any] = {"quantizer": f"ai-edge-quantizer {implementation_version('ai-edge-quantizer')}"}
    if variant in ("int8", "int16x8"):
        io = io or ("int8" if variant == "int8" else "float")
        allowed = ("int8", "float") if variant == "int8" else ("int16", "float")
        if io not in allowed:
            raise ConversionError(f"{spelled('--io')} for {variant} from this source must be "
                                  f"{' or '.join(allowed)}, got '{io}' (ai-edge-quantizer has no uint8 I/O)")
        if calibration is None:
            raise ConversionError(f"tflite-{variant} needs calibration data: {calibration_advice()}")
        used["io"] = io
    if variant == "w4" and group_size not in W4_RECIPES:
        raise ConversionError(f"group_size for tflite-w4 must be 32 or 64 (or none: per channel), got {group_size}")
    used["recipe"] = {"fp16": "float16 weights (FLOAT_CASTING)", "dynamic": "dynamic_wi8_afp32",
                      "w4": W4_RECIPES.get(group_size), "int8": "static_wi8_ai8", "int16x8": "static_wi8_ai16"}[variant]
    head = output_head(float_path) if keep_output_float and variant in ("int8", "int16x8") else []
    if head:
        used["kept_float_outputs"] = head
    if exclude_nodes:
        used["excluded_nodes"] = list(exclude_nodes)
    scopes = head + list(exclude_nodes)
    try:
        quantized = _run(quantizer, recipe, float_path, variant, io, calibration, keep_float_ops, scopes, group_size)
    except _OpFailed as failed:  # one op the quantizer cannot handle: keep that op float and say so
        quantized = _run(quantizer, recipe, float_path, variant, io, calibration, (*keep_float_ops, failed.op),
                         scopes, group_size)
        used["kept_float"] = {failed.op: f"ai-edge-quantizer fails on it: {failed.message}"}
    output.write_bytes(quantized)
    return used


class _OpFailed(Exception):
    def __init__(self, op: str, message: str) -> None:
        super().__init__(message)
        self.op, self.message = op, message


def _failing_op(exc: BaseException) -> str | None:
    """The TFLite op whose materialisation raised (ai-edge-quantizer has one ``materialize_<op>`` per op)."""
    import traceback

    from ai_edge_quantizer import qtyping

    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        match = re.fullmatch(r"materialize_(\w+)", frame.name)
        if match and hasattr(qtyping.TFLOperationName, match.group(1).upper()):
            return match.group(1).upper()
    return None


def _run(quantizer: Any, recipe: Any, float_path: Path, variant: str, io: str | None,
         calibration: Callable[[], Iterable[dict[str, Any]]] | None, keep_float: tuple[str, ...],
         float_scopes: list[str] | None, group_size: int | None = None) -> bytes:
    chatter = _io.StringIO()  # it prints a progress bar and a size summary: keep them off the terminal
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            engine = quantizer.Quantizer(str(float_path))
            _configure(engine, recipe, variant, io or "float", keep_float, float_scopes, group_size)
            result = None
            if engine.need_calibration:
                key, dtypes = _signature(float_path)
                samples = [{name: np.asarray(value).astype(dtypes.get(name, np.asarray(value).dtype), copy=False)
                            for name, value in feeds.items()} for feeds in calibration()]
                result = engine.calibrate({key: samples})
            return engine.quantize(result).quantized_model
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the quantizer raises ValueError, KeyError, RuntimeError and more
        message = f"{type(exc).__name__}: {first_line(exc)[:250]}"
        op = _failing_op(exc)
        if op and op not in keep_float:
            raise _OpFailed(op, message) from exc
        raise ConversionError(f"ai-edge-quantizer cannot make tflite-{variant}: {message}") from exc
