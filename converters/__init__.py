"""Converters: trained model + target + calibration -> an artifact on disk.

One private module per target family (``_tflite``, ``_onnx``, ``_openvino``);
the registry below names them lazily, so listing targets imports nothing.
TensorFlow, tf2onnx and NNCF are imported inside the converter functions only;
the device path never imports this package.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgekit.runtimes.errors import (
    ConversionError,
    UnsupportedModelError,
    calibration_advice,
    input_shape_option,
    spelled,
)
from edgekit.runtimes.formats import ONNX

#: ``int8_placement`` values (TFLite and ONNX int8): around what the engine runs in float, or wherever the
#: quantizer can (its own behaviour)
INT8_PLACEMENTS = ("engine", "everywhere")
#: variants with weights in fewer bits and activations in float (onnx-w4, openvino-w8...)
WEIGHT_ONLY = ("w4", "w8")
#: The values each converter option takes, here beside the registry so the command line offers the same
#: choices the converters check without importing a converter (``edgekit run`` on a board loads none).
#: tflite-int8's input/output types, and tflite-int16x8's
INT8_IO_TYPES, INT16X8_IO_TYPES = ("int8", "uint8", "float"), ("float", "int16")
CALIB_METHODS = ("minmax", "entropy", "percentile")  # ONNX Runtime's calibrators
ONNX_FORMATS = ("qdq", "qoperator")
ONNX_QUANT_TYPES = ("int8", "uint8")  # onnx-int8's activation and weight types
#: qnn-int8's activations: 8-bit (QNN's default) or 16-bit with 8-bit weights (A16W8, Qualcomm's advice when
#: 8-bit activations lose too much)
QNN_ACTIVATION_TYPES = ("uint8", "uint16")
ACCURACY_LEVELS = (0, 1, 2, 3, 4)  # MatMulNBits' accuracy_level (onnx-w4/w8), "auto" besides
PRESETS = ("performance", "mixed")  # NNCF's
OVERFLOW_FIXES = ("enable", "first_layer_only", "disable")  # NNCF's
MODEL_TYPES = ("auto", "transformer", "none")  # NNCF's model type; "auto" is edgekit's attention check
#: Converter parameters the pipeline fills in itself (calibration data, held-out samples, the drop budget).
PIPELINE_ARGUMENTS = frozenset({"calibration", "calibration_count", "validation", "max_drop"})


class Converter(Protocol):
    """What every target family's ``convert`` is (``_tflite``, ``_onnx``, ``_openvino``, ``_ethosu``): write
    ``target``'s artifact for ``source`` (a ``_source.Source``) to ``output`` and return what it used — the
    report's ``options``: the route, the settings chosen, what stayed float. Its keyword-only parameters are the
    target's user options (``Target.options``) and what the pipeline fills in (``PIPELINE_ARGUMENTS``);
    ``calibration`` returns a fresh iterable of ``{input_name: array}`` samples each time it is called.

    Target modules consume what the source-side modules make (``_source``: a source opened and described;
    ``_onnx_export``: a float ONNX; ``_tflite_export``: a float .tflite; ``_torch``: a PyTorch program) and
    never each other, except ``_ethosu``, which compiles the int8 .tflite the TFLite target makes."""

    def __call__(self, source: Any, target: Target, output: Path, *,
                 calibration: Callable[[], Iterable[dict[str, Any]]] | None = None,
                 **options: Any) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Target:
    """One conversion target, e.g. ``tflite-int8``.

    Attributes:
        name: The target's name on the command line.
        family: ``tflite``, ``onnx``, ``openvino``, ``ethos-u``, ``qnn``, ``rknn`` or ``imx500``.
        variant: The name minus its family; it ends the artifact's name (``model_int8.tflite``).
        extension: The artifact's suffix.
        converter: ``"module:function"`` that builds it, imported when used.
        needs_calibration: Whether representative data is required.
        integer_only: Named for integer execution: every float op left is warned about, and with
            ``allow_float_ops=False`` (``--integer-only``) the conversion fails on it.
    """

    name: str
    family: str
    variant: str
    extension: str
    converter: str
    needs_calibration: bool = False
    integer_only: bool = False
    # the option whose value names the artifact instead of the variant (ethos-u: the NPU configuration;
    # qnn-int8: the chip), after ``prefix`` (``model_qnn_qcs6490.onnx``)
    variant_option: str | None = None
    prefix: str = ""
    # source kinds that arrive already quantized and so need no calibration (ethos-u: an int8 .tflite)
    quantized_sources: tuple[str, ...] = ()
    # source kinds whose already-quantized models (QAT, another tool's int8) this target takes with the scales
    # they carry, calibrating nothing; any other target refuses such a source
    keeps_scales_from: tuple[str, ...] = ()
    # "module:function" yielding (label, options, sensitivity ranking) to try when the artifact collapses
    remedies: str | None = None
    # files the converter writes beside the artifact, named by replacing its extension (imx500's memory report)
    companions: tuple[str, ...] = ()

    def keeps_scales_of(self, source: Any) -> bool:
        """Whether this target takes ``source`` (a ``Source``) as it is quantized."""
        return source.quantization is not None and source.kind in self.keeps_scales_from

    def calibrates(self, source: Any) -> bool:
        return self.needs_calibration and source.kind not in self.quantized_sources \
            and not self.keeps_scales_of(source)

    def artifact_name(self, stem: str, options: dict[str, Any] | None = None) -> str:
        variant = (options or {}).get(self.variant_option, self.variant) if self.variant_option else self.variant
        return f"{stem}_{self.prefix}{variant}{self.extension}"

    def function(self) -> Converter:
        module, attr = self.converter.split(":")
        return getattr(importlib.import_module(module), attr)

    def parameters(self) -> frozenset[str]:
        """Every keyword-only parameter of this target's converter."""
        parameters = inspect.signature(self.function()).parameters.values()
        return frozenset(p.name for p in parameters if p.kind is p.KEYWORD_ONLY)

    def remedy_function(self) -> Callable[..., Any] | None:
        if self.remedies is None:
            return None
        module, attr = self.remedies.split(":")
        return getattr(importlib.import_module(module), attr)

    def options(self) -> frozenset[str]:
        """The user options this target's converter takes (what the pipeline supplies itself excluded)."""
        return self.parameters() - PIPELINE_ARGUMENTS

    def companion_names(self, stem: str, options: dict[str, Any] | None = None) -> list[str]:
        """Files written besides the artifact: an IR's .bin, the ``companions``."""
        base = self.artifact_name(stem, options)[: -len(self.extension)]
        return [base + suffix for suffix in (".bin",) * (self.extension == ".xml") + self.companions]


def _remedies(family: str, variant: str) -> str | None:
    return f"edgekit.converters._{family}:remedies" if variant == "int8" else None


def _tflite(variant: str, calibrated: bool = False, integer_only: bool = False) -> Target:
    return Target(f"tflite-{variant}", "tflite", variant, ".tflite", "edgekit.converters._tflite:convert", calibrated,
                  integer_only, remedies=_remedies("tflite", variant),
                  keeps_scales_from=_kept(("tflite", "savedmodel"), variant))


def _onnx(variant: str, calibrated: bool = False) -> Target:
    return Target(f"onnx-{variant}", "onnx", variant, ".onnx", "edgekit.converters._onnx:convert", calibrated,
                  remedies=_remedies("onnx", variant), keeps_scales_from=_kept(("onnx", "pytorch"), variant))


def _openvino(variant: str, calibrated: bool = False) -> Target:
    # OpenVINO reads an ONNX model's QuantizeLinear/DequantizeLinear pairs as FakeQuantize layers
    return Target(f"openvino-{variant}", "openvino", variant, ".xml", "edgekit.converters._openvino:convert",
                  calibrated, remedies=_remedies("openvino", variant),
                  keeps_scales_from=_kept(("onnx", "pytorch", "openvino"), variant))


def _kept(source_kinds: tuple[str, ...], variant: str) -> tuple[str, ...]:
    """An int8 target keeps the scales of a quantized source its engine reads as it is: QDQ ONNX (a PT2E
    PyTorch model's export is one) for ORT and OpenVINO, an IR with FakeQuantize layers (NNCF's) for OpenVINO,
    an integer .tflite and a SavedModel's FakeQuant ranges (TensorFlow's converter reads them) for LiteRT.
    onnx2tf has no path for QDQ ONNX into a .tflite; OpenVINO's IR of the int8-I/O test .tflite disagreed with
    LiteRT's run of it (cosine -0.98), so a .tflite's scales are not offered to OpenVINO."""
    return source_kinds if variant == "int8" else ()


def kept_source_scales(source: Any) -> dict[str, Any]:
    """What an int8 converter reports when it keeps an already-quantized source's scales."""
    return {"quantization": "scales kept from source", "source_quantization": source.quantization,
            "calibration": "none: the source carries its own scales (quantization-aware training or another "
                           "tool's int8); calibration data, if given, served validation only"}


def check_quantized_source(source: Any, targets: list[Target]) -> None:
    """Refuse, before any work, targets that would quantize an already-quantized source a second time (new
    scales on top of the trained ones) or give its integer layers a float target's name."""
    if source.quantization is None:
        return
    refused = [t for t in targets if not t.keeps_scales_of(source) and source.kind not in t.quantized_sources]
    if not refused:
        return
    floats = [t.name for t in refused if t.variant in ("fp32", "fp16")]
    again = [t.name for t in refused if t.name not in floats]
    harms = ([f"{', '.join(again)} would quantize it again over its own scales"] if again else []) + \
        ([f"{', '.join(floats)} would keep its integer layers under a float name"] if floats else [])
    keeping = [t.name for t in TARGETS.values() if source.kind in t.keeps_scales_from]
    raise UnsupportedModelError(
        f"'{source.path.name}' is already quantized ({source.quantization}): {'; '.join(harms)}; choose "
        f"{' or '.join(keeping) or 'another source'}, which keep(s) its scales, or convert the float model")


def check_route(source: Any, targets: list[Target], *, has_data: bool) -> None:
    """Everything that would make ``targets`` fail for ``source`` before they start, checked before any work:
    an already-quantized source quantized again, the ONNX -> TFLite route's static shapes and onnx2tf's
    environment, and calibration data for the targets that calibrate (``has_data``: the job has some)."""
    check_quantized_source(source, targets)
    tflite = [t.name for t in targets if t.family in ("tflite", "ethos-u")]
    # onnx2tf, rknn-toolkit2 and the IMX500 converter compile fixed shapes only
    static = tflite + [t.name for t in targets if t.family in ("rknn", "imx500")]
    if source.kind == ONNX and static:
        for spec in source.inputs:
            if None in spec.shape:
                fixed = ",".join("1" if d is None else str(d) for d in spec.shape)
                raise ConversionError(f"{', '.join(static)} from ONNX need static shapes, and input '{spec.name}' "
                                      f"has a dynamic batch: pass {input_shape_option(spec.name, fixed)}")
    if source.kind == ONNX and tflite:
        from edgekit.converters._onnx2tf import find_python

        find_python()
    if any(t.family == "rknn" for t in targets):
        from edgekit.converters._rknn_env import find_python as find_rknn

        find_rknn()  # the toolkit's environment, before any work
    if any(t.family == "imx500" for t in targets):
        from edgekit.converters._imx500_env import check_image_input, check_java, converter_command
        from edgekit.converters._imx500_env import find_python as find_imx500

        check_image_input(source)
        converter_command(find_imx500())  # the tools' environment and the Java they run on, before any work
        check_java()
    needing = [t.name for t in targets if t.calibrates(source)]
    if needing and not has_data:
        raise ConversionError(f"{', '.join(needing)} need(s) calibration data: {calibration_advice()}")


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        _tflite("int8", True, integer_only=True),
        _tflite("int16x8", True),
        _tflite("fp16"),
        _tflite("dynamic"),
        _tflite("w4"),
        _tflite("sparse"),
        _tflite("fp32"),
        _onnx("int8", True),
        _onnx("int8-dynamic"),
        _onnx("fp16"),
        _onnx("fp32"),
        _onnx("w4"),
        _onnx("w8"),
        _openvino("int8", True),
        _openvino("fp16"),
        _openvino("fp32"),
        _openvino("w4"),
        _openvino("w8"),
        # variant "ethos-u55-128" is the default --npu-config; the artifact is named after the chosen one
        Target("ethos-u", "ethos-u", "ethos-u55-128", ".tflite", "edgekit.converters._ethosu:convert", True,
               variant_option="npu_config", quantized_sources=("tflite",)),
        # a Qualcomm HTP context binary in an ONNX EPContext, named after the chip (--for): model_qnn_qcs6490.onnx
        Target("qnn-int8", "qnn", "qcs6490", ".onnx", "edgekit.converters._qnn:convert", True,
               variant_option="chip", prefix="qnn_", remedies="edgekit.converters._qnn:remedies"),
        # a Rockchip RKNPU binary built by rknn-toolkit2 in its own environment, named after the platform (--for)
        Target("rknn-int8", "rknn", "rk3588", ".rknn", "edgekit.converters._rknn:convert", True,
               variant_option="chip"),
        # Sony's packerOut.zip for the Raspberry Pi AI Camera, quantized by MCT: model_imx500_packerOut.zip and
        # the converter's model_imx500_MemoryReport.json
        Target("imx500", "imx500", "imx500", "_packerOut.zip", "edgekit.converters._imx500:convert", True,
               companions=("_MemoryReport.json",)),
    )
}


def resolve_targets(names: str | list[str] | tuple[str, ...]) -> list[Target]:
    """Parse ``"tflite-int8,tflite-fp32"`` (or a list) into targets, keeping order, refusing unknown names."""
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    wanted = [n.strip().lower() for n in names if n.strip()]
    if not wanted:
        raise ConversionError(f"no target given; choose from {', '.join(TARGETS)}")
    unknown = [n for n in wanted if n not in TARGETS]
    if unknown:
        raise ConversionError(f"unknown target(s) {unknown}; choose from {', '.join(TARGETS)}")
    return [TARGETS[n] for n in dict.fromkeys(wanted)]


def work_folder(output: Path) -> Path:
    """A scratch folder beside an artifact being built in staging (removed with the staging folder); shared by
    the passes of one conversion (tflite-int8 quantizes twice when XNNPACK lacks an int8 kernel)."""
    folder = output.parent / f".{output.name}-work"
    folder.mkdir(exist_ok=True)
    return folder


def check_int8_placement(value: str) -> None:
    if value not in INT8_PLACEMENTS:
        raise ConversionError(f"{spelled('--int8-placement')} must be one of {', '.join(INT8_PLACEMENTS)}, "
                              f"got '{value}'")


def placement_backs_off(artifact: Path, kept_float: str, why: str) -> str | None:
    """What an engine placement reports when keeping ``kept_float`` in float for speed left the int8 ``artifact``
    mostly float — then the caller quantizes them too, since speed never buys an "-int8" name for a float model;
    None when the artifact is mostly integer."""
    from edgekit.runtimes.audit import audit_model
    from edgekit.runtimes.formats import open_model_file

    audit = audit_model(open_model_file(artifact))
    if not audit.mostly_float:
        return None
    return f"everywhere: with {kept_float} in float only {audit.describe_share()}, so they were quantized too ({why})"


def check_options(targets: list[Target], options: dict[str, Any]) -> None:
    """Refuse options that none of the chosen targets takes (a typo would otherwise do nothing)."""
    accepted = set().union(*(t.options() for t in targets))
    unknown = sorted(set(options) - accepted)
    if unknown:
        names = ", ".join(t.name for t in targets)
        raise ConversionError(f"option(s) {unknown} do not apply to {names}; they take {sorted(accepted) or 'none'}")

