"""``edgekit convert``: the conversion pipeline from the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from edgekit.cli._common import console, emit_json, json_option, parse_input_shapes
from edgekit.converters import (
    ACCURACY_LEVELS,
    CALIB_METHODS,
    INT8_IO_TYPES,
    INT8_PLACEMENTS,
    INT16X8_IO_TYPES,
    MODEL_TYPES,
    ONNX_FORMATS,
    ONNX_QUANT_TYPES,
    OVERFLOW_FIXES,
    PRESETS,
    QNN_ACTIVATION_TYPES,
)
from edgekit.pipeline.preprocess import COLORS, LAYOUTS
from edgekit.runtimes.cpu import FOR_CPU
from edgekit.runtimes.npu import NPU_CHIPS
from edgekit.runtimes.vela import NPU_CONFIGS


def _pair(text: str | None, flag: str) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
        return height, width
    except ValueError:
        raise click.BadParameter(f"'{text}': write HEIGHTxWIDTH, e.g. 224x224", param_hint=flag) from None


def _floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"'{text}': write comma-separated numbers, e.g. 0.485,0.456,0.406",
                                 param_hint=flag) from None


#: the source and data options convert and optimize share (calibration, preprocessing, naming)
DATA_OPTIONS = [
    click.option("--calib", metavar="PATH|random", help="Calibration data: image folder, .npy, .npz, or 'random'."),
    click.option("--calib-size", type=click.IntRange(min=1), default=200, show_default=True,
                 help="Calibration samples (more are held out for validation)."),
    click.option("--val-size", type=click.IntRange(min=1), help="Held-out validation samples [default: max(50, N/4)]."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of the calibration shuffle."),
    click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:1,224,224,3",
                 help="Fix an input's dynamic dimensions."),
    click.option("--size", help="Resize images to HEIGHTxWIDTH [default: the model's input size]."),
    click.option("--crop", help="Center-crop HEIGHTxWIDTH after resizing."),
    click.option("--scale", type=float, default=1 / 255, show_default="1/255", help="Multiply pixels by this."),
    click.option("--mean", help="Per-channel mean to subtract after scaling, e.g. 0.485,0.456,0.406."),
    click.option("--std", help="Per-channel std to divide by, e.g. 0.229,0.224,0.225."),
    click.option("--color", type=click.Choice(list(COLORS)), default="rgb", show_default=True),
    click.option("--layout", type=click.Choice(list(LAYOUTS)), help="Image layout [default: from the input shape]."),
    click.option("--name", help="Stem of the artifacts' names [default: the source's]."),
    click.option("--trust-pickle", is_flag=True, help="PyTorch .pt2: load pickled objects beyond tensors (runs their "
                 "code; only for files you trust)."),
]


def data_options(function: Any) -> Any:
    for option in reversed(DATA_OPTIONS):
        function = option(function)
    return function


def recipe_from(size: str | None, crop: str | None, scale: float, mean: str | None, std: str | None, color: str,
                layout: str | None) -> Any:
    """The preprocessing recipe the data options describe."""
    from edgekit.pipeline.preprocess import Recipe

    return Recipe(size=_pair(size, "--size"), crop=_pair(crop, "--crop"), scale=scale, mean=_floats(mean, "--mean"),
                  std=_floats(std, "--std"), color=color, layout=layout)


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--to", "targets", required=True, metavar="T1[,T2...]",
              help="Targets, e.g. tflite-int8,tflite-fp32 (docs/guides/convert.md has the source x target matrix).")
@data_options
@click.option("-o", "--output-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              show_default=True, help="Where artifacts and their .json reports go.")
@click.option("--max-drop", type=float, help="Fail (exit 1) when accuracy drops more than this many points (with "
              "--decide: this % of its decisions change; without labels: (1 - cosine) x 100); remedies are tried "
              "first.")
@click.option("--decide", metavar="FILE.py:FUNCTION", help="Your application's decisions from the outputs, judged "
              "like any output's (FUNCTION gets {output: array} of every validation sample, returns an array).")
@click.option("--no-validate", is_flag=True, help="Skip comparing each artifact with the float original.")
@click.option("--no-speed-check", is_flag=True, help="Skip timing each int8 artifact against its float sibling on "
              "this machine (about a second each; done only for artifacts built for this CPU; the repair then keeps a "
              "remedy even when it runs under half float's speed).")
@click.option("--accept-loss", is_flag=True, help="Keep an artifact whose outputs collapsed (below the decision "
              "agreement / SQNR floors) as ok, with a warning.")
@click.option("--no-repair", is_flag=True, help="Do not try remedies when a quantized artifact collapses.")
@click.option("--force", is_flag=True, help="Overwrite existing artifacts and reports.")
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write every target's report as one page (.html) or table (.md).")
@click.option("--io", type=click.Choice(list(dict.fromkeys(INT8_IO_TYPES + INT16X8_IO_TYPES))),
              help="TFLite: I/O type of integer targets [default: int8 for tflite-int8, float for tflite-int16x8].")
@click.option("--allow-float-ops/--integer-only", default=None,
              help="TFLite int8: ops that cannot be quantized stay float, listed in the report (the TFLite "
              "converter's float fallback), or the strict full-integer mode fails on them [default: allow].")
@click.option("--int8-placement", type=click.Choice(list(INT8_PLACEMENTS)),
              help="TFLite and ONNX int8: 'engine' keeps in float what the engine has no int8 kernel for (XNNPACK's "
              "missing op types; ONNX Runtime's x*HardSigmoid(x) gates with their conv), as those made int8 slower "
              "than float, and, timed on this CPU, an image model's first convolution where ONNX Runtime runs the "
              "model faster with it in float; 'everywhere' quantizes all, as the engine's own quantizer does "
              "[default: engine].")
@click.option("--channels-last", is_flag=True, default=None,
              help="TFLite from PyTorch/ONNX: make 4-D NCHW inputs NHWC (default: keep the source's layout).")
@click.option("--calib-method", type=click.Choice(list(CALIB_METHODS)),
              help="ONNX int8: range calibration [default: minmax].")
@click.option("--per-channel/--per-tensor", default=None, help="ONNX int8: weight quantization granularity "
              "[default: per-channel].")
@click.option("--activation-type", type=click.Choice(list(dict.fromkeys(ONNX_QUANT_TYPES + QNN_ACTIVATION_TYPES))),
              help="ONNX int8: activation type [default: from --for]; qnn-int8: uint8 (default) or uint16.")
@click.option("--weight-type", type=click.Choice(list(ONNX_QUANT_TYPES)),
              help="ONNX int8: weight type [default: int8].")
@click.option("--symmetric", is_flag=True, default=None, help="ONNX int8: symmetric activation ranges.")
@click.option("--exclude-nodes", help="ONNX int8: comma-separated node names to keep in float.")
@click.option("--exclude-op-types", help="ONNX int8: comma-separated op types to keep in float.")
@click.option("--keep-output-float", is_flag=True, default=None,
              help="int8 (ONNX, OpenVINO, TFLite): keep the ops computing the model's outputs in float (detector "
              "heads).")
@click.option("--onnx-format", type=click.Choice(list(ONNX_FORMATS)),
              help="ONNX int8: QDQ (portable, default) or QOperator (com.microsoft ops, ONNX Runtime only).")
@click.option("--for", "for_chip", type=click.Choice(["auto", *FOR_CPU, *NPU_CHIPS]),
              help="int8 (ONNX, OpenVINO): the CPU the model is for, by its int8 instructions; picks ONNX's types "
              "and reduce_range, NNCF's overflow fix [default: auto = this machine; x86 = with VNNI]. qnn-int8: "
              "the Qualcomm SoC or HTP generation [default: qcs6490 = HTP v68]; rknn-int8: the Rockchip platform "
              "[default: rk3588].")
@click.option("--reduce-range/--full-range", default=None, help="ONNX int8: 7-bit weights (x86 without VNNI) "
              "[default: from --for].")
@click.option("--opset", type=click.IntRange(min=7), help="ONNX: opset of the export [default: 17].")
@click.option("--preset", type=click.Choice(list(PRESETS)),
              help="OpenVINO int8: NNCF preset [default: performance; mixed = asymmetric activations].")
@click.option("--model-type", type=click.Choice(list(MODEL_TYPES)),
              help="OpenVINO int8: NNCF's model type; 'auto' uses 'transformer' for graphs with attention "
              "(MatMuls of two activations and a Softmax), 'none' is NNCF's default [default: auto].")
@click.option("--ignored-names", help="OpenVINO int8: comma-separated layer names to keep in float.")
@click.option("--ignored-types", help="OpenVINO int8: comma-separated layer types to keep in float.")
@click.option("--ignored-patterns", help="OpenVINO int8: comma-separated name regexes to keep in float.")
@click.option("--npu-config", type=click.Choice(list(NPU_CONFIGS)),
              help="ethos-u: the NPU to compile for [default: ethos-u55-128].")
@click.option("--system-config", help="ethos-u: Vela system configuration (e.g. Ethos_U55_High_End_Embedded).")
@click.option("--memory-mode", help="ethos-u: Vela memory mode (e.g. Shared_Sram, Dedicated_Sram).")
@click.option("--require-full-npu", is_flag=True, default=None, help="ethos-u: fail when any op falls back to the CPU.")
@click.option("--overflow-fix", type=click.Choice(list(OVERFLOW_FIXES)),
              help="OpenVINO int8: NNCF's 7-bit weights against int8 saturation [default: enable for x86 without "
              "VNNI, else NNCF's first_layer_only].")
@click.option("--fast-bias-correction/--bias-correction", default=None,
              help="OpenVINO int8: NNCF's fast bias correction [default] or the slower full one.")
@click.option("--group-size", type=click.IntRange(min=1), help="Weight-only (-w4/-w8): weights per scale "
              "[default: 128 for onnx-w4/w8 and openvino-w4; per channel for openvino-w8 and tflite-w4].")
@click.option("--symmetric-weights/--asymmetric-weights", default=None, help="onnx-w4/w8, openvino-w4/w8: weight "
              "zero points [default: each engine's: asymmetric on ONNX Runtime and openvino-w8, symmetric on "
              "openvino-w4].")
@click.option("--dequantize", is_flag=True, default=None, help="A quantized (QAT/QDQ) ONNX source: remove its "
              "Q/DQ pairs first, so float targets (or a new calibration) can take it.")
@click.option("--fp16-arithmetic/--no-fp16-arithmetic", default=None, help="tflite-fp16: let XNNPACK compute in "
              "fp16 on CPUs with fp16 arithmetic (Armv8.2+, e.g. Pi 5) [default], or keep fp32 arithmetic.")
@click.option("--accuracy-level", type=click.Choice(["auto", *map(str, ACCURACY_LEVELS)]),
              help="onnx-w4/w8: MatMulNBits compute [default: auto = time ORT's default 0 against 4 (int8 "
              "activations) here and keep the faster].")
@json_option
def convert(source: Path, targets: str, calib: str | None, calib_size: int, val_size: int | None, seed: int,
            input_shapes: tuple[str, ...], size: str | None, crop: str | None, scale: float, mean: str | None,
            std: str | None, color: str, layout: str | None, output_dir: Path, max_drop: float | None,
            no_validate: bool, no_speed_check: bool, accept_loss: bool, no_repair: bool, force: bool,
            name: str | None, decide: str | None, trust_pickle: bool, report_path: Path | None, as_json: bool,
            exclude_nodes: str | None, exclude_op_types: str | None,
            ignored_names: str | None, ignored_types: str | None, ignored_patterns: str | None,
            **options: Any) -> None:
    """Convert a PyTorch .pt2, Keras, SavedModel, ONNX or float TFLite model to edge targets, validate and
    report each."""
    from edgekit._progress import rich_progress
    from edgekit.pipeline.conversion import FAILED_FOLDER
    from edgekit.pipeline.conversion import convert as run_conversion

    if options.get("io") == "uint8":
        click.echo("warning: uint8 I/O runs slower than int8 on XNNPACK and 32-bit ARM; prefer int8 unless the "
                   "device needs uint8", err=True)
    for_chip = options.pop("for_chip")
    if for_chip is not None:  # one --for: a CPU for the CPU targets, an NPU chip for the NPU targets
        options["chip" if for_chip in NPU_CHIPS else "for_cpu"] = for_chip
    recipe = recipe_from(size, crop, scale, mean, std, color, layout)
    with rich_progress() as progress:
        results = run_conversion(
            source, targets, calibration=calib, output_dir=output_dir, input_shapes=parse_input_shapes(input_shapes),
            recipe=recipe, calib_size=calib_size, validation_size=val_size, seed=seed, max_drop=max_drop,
            validate_outputs=not no_validate, check_speed=not no_speed_check, accept_loss=accept_loss,
            decide=load_function(decide, "--decide"), repair=not no_repair, force=force, keep_going=True,
            name=name, trust_pickle=trust_pickle, progress=progress,
            exclude_nodes=_names(exclude_nodes), exclude_op_types=_names(exclude_op_types),
            ignored_names=_names(ignored_names), ignored_types=_names(ignored_types),
            ignored_patterns=_names(ignored_patterns), **options)
    if len(results) == 1 and results[0].error:  # one target that could not be made: its error, as raised
        click.echo(f"Error: {results[0].error}", err=True)
        sys.exit(1)
    made = [r for r in results if r.artifact is not None]
    if report_path and made:
        from edgekit.report import write_report

        write_report([r.report for r in made], report_path, force=force)
    if as_json:
        emit_json([r.report for r in results])
    else:
        _print_conversions(made)
        for r in results:
            if r.error:
                console().print(f"{r.target}: not converted: {_unprefixed(r.target, r.error)}")
    failed = [r for r in results if not r.passed]
    if failed:
        reasons = "; ".join(f"{r.target}: {_unprefixed(r.target, '; '.join(r.report['failures']))}" for r in failed)
        aside = any(r.artifact is not None for r in failed)
        click.echo(f"Error: {len(failed)} of {len(results)} target(s) did not pass: {reasons}"
                   + (f" (failed artifacts kept aside in '{output_dir / FAILED_FOLDER}')" if aside else ""), err=True)
        sys.exit(1)


def _unprefixed(target: str, message: str) -> str:
    """A message without the target name it may start with: the line names the target already."""
    return message.removeprefix(f"{target}: ")


def load_function(spec: str | None, flag: str) -> Any:
    """``FILE.py:FUNCTION`` -> the function (the user's own file, run as an import would run it)."""
    if spec is None:
        return None
    import importlib.util

    path, _, attribute = spec.rpartition(":")
    if not path.endswith(".py") or not attribute:
        raise click.BadParameter(f"'{spec}': write FILE.py:FUNCTION", param_hint=flag)
    if not Path(path).is_file():
        raise click.BadParameter(f"'{path}' does not exist", param_hint=flag)
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's file: any failure is theirs, said in one line
        raise click.BadParameter(f"'{path}' fails to load: {type(exc).__name__}: {exc}", param_hint=flag) from exc
    function = getattr(module, attribute, None)
    if not callable(function):
        raise click.BadParameter(f"'{path}' has no function '{attribute}'", param_hint=flag)
    return function


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(n.strip() for n in text.split(",") if n.strip()) if text else None


def _print_conversions(results: list) -> None:
    from rich.table import Table

    if not results:
        return
    table = Table()
    for column in ("target", "artifact", "size", "vs source", "accuracy", "drop", "top-1 agree", "integer",
                   "speed vs float", "status"):
        table.add_column(column)
    for r in results:
        report, v = r.report, r.report.get("validation") or {}
        accuracy = "" if v.get("accuracy_converted") is None else \
            f"{v['accuracy_converted']:.1f}% (float {v['accuracy_float']:.1f}%)"
        drop = "" if v.get("drop") is None else f"{v['drop']:.2f}"
        agree = "" if v.get("top1_agreement") is None else f"{v['top1_agreement']:.1f}%"
        audit = report["audit"]
        integer = f"{audit['integer_share']:.0%}" + (" full" if audit["fully_integer"] else "")
        variant = r.target.rsplit("-", 1)[-1]
        # converters.WEIGHT_ONLY, spelled here: the CLI's device commands never import the converters
        if variant in ("w4", "w8"):  # what is integer in a weight-only artifact is its stored weights
            integer = f"int{variant[1:]} weights"
        speed = report.get("speed_vs_float_here") or {}
        speed = f"{speed['speedup']:.2f}x here" if speed.get("measured") else ""
        table.add_row(r.target, r.artifact.name, f"{report['artifact']['size_bytes']:,}",
                      f"{report['artifact']['size_ratio']:.2f}x", accuracy, drop, agree, integer, speed,
                      report["status"] + (" (synthetic data)" if v.get("synthetic") else ""))
    out = console()
    out.print(table)
    for r in results:
        repair = r.report.get("repair")
        if repair:
            tried = ", ".join(a["remedy"] + (" (failed)" if "error" in a else " (under half float's speed)"
                                             if a.get("slower_than_float") else "") for a in repair["attempts"][1:])
            outcome = f"kept: {repair['chosen']}" if repair["chosen"] else "none kept"
            failed = "collapsed" if repair["attempts"][0]["collapsed"] else "exceeded --max-drop"
            out.print(f"{r.target}: the default int8 {failed}; tried {tried}; {outcome}")
    for r in results:
        npu = r.report["options"].get("npu")
        if npu:
            fallbacks = "; ".join(f"{f['type']} {f['name']} ({f['reason']})" for f in npu["cpu_fallbacks"]) or "none"
            out.print(f"{npu['npu_config']}: {npu['npu_ops']} ops on the NPU, {npu['cpu_ops']} on the CPU "
                      f"(fallbacks: {fallbacks}); estimated {npu['inference_time_ms']:.3f} ms/inference "
                      f"({npu['inferences_per_second']:,.0f} inf/s at {npu['core_clock_mhz']:.0f} MHz), "
                      f"{npu['macs']:,} MACs, SRAM {npu['sram_used_kib']:.1f} KiB, "
                      f"flash {npu['off_chip_flash_used_kib'] + npu['on_chip_flash_used_kib']:.1f} KiB")
