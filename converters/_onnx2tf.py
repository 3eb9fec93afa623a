"""ONNX -> float32 .tflite with onnx2tf, run in its own Python environment.

onnx2tf 2.x needs Python >= 3.12 and hard-pins numpy, onnx, onnxruntime and ai-edge-litert versions
that conflict with the main install, so it lives in a venv of its own and talks to edgekit through
files: ONNX in, float32 .tflite out (its TensorFlow-free ``flatbuffer_direct`` backend). Quantization
then happens here, with ai-edge-quantizer (``_aeq``). Every input keeps its ONNX layout (``-k``), so
the TFLite form takes the same feeds as the ONNX one.

The environment is ``$EDGEKIT_ONNX2TF`` (a python that has onnx2tf) or the venv ``edgekit setup
onnx2tf`` creates in edgekit's cache folder.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgekit.converters._managed_env import find_python as managed_python
from edgekit.converters._managed_env import python_version, venv_folder
from edgekit.runtimes.errors import ConversionError

log = logging.getLogger("edgekit")

ENV_VARIABLE = "EDGEKIT_ONNX2TF"
VENV = "onnx2tf-venv"
#: the version tested here (TF-free flatbuffer_direct backend, no network code, calibration-based int8)
REQUIREMENT = "onnx2tf==2.6.9"
MIN_PYTHON = (3, 12)


def managed_env() -> Path:
    return venv_folder(VENV)


def find_python() -> Path:
    """The interpreter that runs onnx2tf, or a MissingDependencyError saying how to get one."""
    return managed_python(ENV_VARIABLE, VENV, "onnx2tf (ONNX -> TFLite runs it in its own Python >= 3.12 "
                          "environment): run `edgekit setup onnx2tf`")


def _candidate_pythons() -> list[str]:
    found = [shutil.which(f"python3.{minor}") for minor in (13, 12)] + [sys.executable]
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    if pyenv.is_dir():  # pyenv shims refuse versions not selected globally; ask the interpreters directly
        found += [str(p / "bin" / "python") for p in sorted(pyenv.iterdir(), reverse=True)]
    return [p for p in dict.fromkeys(found) if p]


def setup(python: str | None = None, *, log: Any = print) -> Path:
    """Create the managed venv with onnx2tf (from the package registry pip is configured for)."""
    candidates = [python] if python else _candidate_pythons()
    chosen = next((p for p in candidates if (python_version(p) or (0, 0)) >= MIN_PYTHON), None)
    if chosen is None:
        tried = ", ".join(candidates) or "none"
        raise ConversionError(f"onnx2tf needs Python >= 3.12; none found (tried {tried}); pass --python PATH")
    env = managed_env()
    if not (env / "bin" / "python").is_file():
        log(f"creating {env} with {chosen}")
        subprocess.run([chosen, "-m", "venv", str(env)], check=True)
    log(f"installing {REQUIREMENT} into {env}")
    done = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", REQUIREMENT],
                          capture_output=True, text=True)
    if done.returncode:
        raise ConversionError(f"pip could not install {REQUIREMENT} into {env}: {_last_error(done.stderr)}")
    return env


def _last_error(text: str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # onnx2tf colours its messages
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or ["no output"])[-1][:300]


def version(python: Path) -> str:
    done = subprocess.run([str(python), "-c", "from importlib.metadata import version; print(version('onnx2tf'))"],
                          capture_output=True, text=True, timeout=60)
    return done.stdout.strip() or "unknown"


def simplify(onnx_path: Path, output: Path) -> tuple[Path, str]:
    """``onnx_path`` simplified by onnxsim (constant folding, fusions) into ``output``, as onnx2tf does by
    default, with the onnxsim of onnx2tf's environment: (the graph to convert, what happened, for the report).

    Unsimplified, an Ultralytics YOLOv8 exported with the TorchScript exporter keeps C2f's ``chunk`` as
    Shape -> Gather -> Div -> Slice arithmetic, which onnx2tf lowered to slices LiteRT could not size. It runs
    here rather than inside onnx2tf so that edgekit's rewrites come after it: onnxsim fuses a Pad back into the
    MaxPool the rewrites separated. A failure leaves the graph as it was, as in onnx2tf."""
    python = find_python()
    done = subprocess.run([str(python), "-m", "onnxsim", str(onnx_path), str(output), "--no-large-tensor", "10MB"],
                          capture_output=True, text=True)
    if done.returncode or not output.is_file():
        reason = _last_error(done.stderr + done.stdout)
        log.warning("onnxsim could not simplify the ONNX model before onnx2tf (%s); converting it as it is", reason)
        return onnx_path, f"not simplified: onnxsim failed ({reason})"
    return output, "simplified by onnxsim (onnx2tf's default)"


def convert_float(onnx_path: Path, output: Path, input_names: list[str], work: Path) -> dict[str, Any]:
    """Write ``onnx_path`` as a float32 .tflite at ``output``; ``input_names`` keep their ONNX layout (the
    others become channels-last, onnx2tf's default)."""
    python = find_python()
    work = work.resolve()  # onnx2tf runs in the work folder: relative paths would point elsewhere
    folder = work / "onnx2tf"
    # -n: the graph was simplified already (``simplify``), before edgekit's rewrites, which onnxsim would undo
    command = [str(python), "-m", "onnx2tf", "-i", str(onnx_path.resolve()), "-o", str(folder),
               "-tb", "flatbuffer_direct", "-n"] + (["-k", *input_names] if input_names else [])
    done = subprocess.run(command, cwd=work, capture_output=True, text=True)
    produced = folder / f"{onnx_path.stem}_float32.tflite"
    if done.returncode or not produced.is_file():
        reason = _last_error(done.stderr + done.stdout)
        raise ConversionError(f"onnx2tf cannot convert the ONNX model to TFLite: {reason}")
    shutil.move(str(produced), str(output.resolve()))
    return {"route": "ONNX -> TFLite (onnx2tf flatbuffer_direct, float32)", "exporter": f"onnx2tf {version(python)}",
            "layout": f"kept as in the ONNX model (-k): {input_names}" if input_names else "channels-last inputs"}


def restore_output_layouts(onnx_path: Path, tflite_path: Path, channels_last_inputs: list[str]) -> list[str]:
    """Give the .tflite the ONNX model's output shapes where onnx2tf permuted them, or raise.

    onnx2tf takes a graph's last ``Transpose`` of a rank-3 tensor for a layout change and drops it (an
    Ultralytics/YOLOv5-style head's ``[N, anchors, 4 + classes]`` comes out ``[N, 4 + classes, anchors]``). Where an
    output holds exactly the ONNX output's values in another axis order (checked on one input), a ``TRANSPOSE``
    appended to the .tflite restores it; returns what was restored, one line per output."""
    from itertools import permutations

    import numpy as np
    from edgekit.runtimes import open_runtime

    with open_runtime(onnx_path) as onnx_model, open_runtime(tflite_path) as tflite_model:
        pairs = [(i, want, got) for i, (want, got) in enumerate(zip(onnx_model.outputs, tflite_model.outputs))
                 if tuple(want.shape) != tuple(got.shape)]
        if not pairs:
            return []
        rng = np.random.default_rng(0)
        feeds = {s.name: (rng.random(s.shape, dtype=np.float32).astype(s.dtype) if s.dtype.kind == "f"
                          else np.zeros(s.shape, s.dtype)) for s in onnx_model.inputs}
        wanted = onnx_model.run(feeds)
        given = tflite_model.run({k: np.moveaxis(v, 1, -1) if k in channels_last_inputs else v
                                  for k, v in feeds.items()})
    restorations: list[tuple[int, tuple[int, ...], str]] = []
    for index, want, got in pairs:
        expected, produced = wanted[want.name], given[got.name]
        tolerance = 1e-4 * (np.abs(expected).max() + 1)
        perm = next((p for p in permutations(range(produced.ndim)) if produced.transpose(p).shape == expected.shape
                     and np.allclose(produced.transpose(p), expected, rtol=1e-3, atol=tolerance)), None)
        if perm is None:
            raise ConversionError(
                f"onnx2tf changed output '{want.name}' from {list(want.shape)} to {list(got.shape)} (a layout "
                "change); convert from the PyTorch model instead (litert-torch keeps every layout) or use the "
                "onnx/openvino targets")
        restorations.append((index, perm, f"output '{want.name}': onnx2tf wrote {list(got.shape)}; a TRANSPOSE "
                                          f"{list(perm)} restores the ONNX model's {list(want.shape)}"))
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(tflite_path))
    for index, perm, _ in restorations:
        _append_transpose(model, index, perm)
    flatbuffer_utils.write_model(model, str(tflite_path))
    return [said for _, _, said in restorations]


def _append_transpose(model: Any, output_index: int, perm: tuple[int, ...]) -> None:
    """Append ``TRANSPOSE(perm)`` after output ``output_index`` of the main subgraph of ``model`` (a flatbuffer
    ``ModelT``); the new tensor takes over the output's name and its place in the signature."""
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    graph = model.subgraphs[0]
    before = graph.outputs[output_index]
    source = graph.tensors[before]

    perm_buffer = schema.BufferT()
    perm_buffer.data = np.asarray(perm, np.int32).view(np.uint8)
    model.buffers.append(perm_buffer)
    perm_tensor = schema.TensorT()
    perm_tensor.shape, perm_tensor.type = [len(perm)], schema.TensorType.INT32
    perm_tensor.buffer, perm_tensor.name = len(model.buffers) - 1, source.name + b"_perm"
    after = schema.TensorT()
    after.shape = [int(source.shape[p]) for p in perm]
    after.type, after.buffer, after.name = source.type, 0, source.name  # buffer 0: the empty one, by convention
    source.name += b"_onnx2tf_layout"
    graph.tensors += [perm_tensor, after]

    codes = [flatbuffer_utils.get_builtin_code_from_operator_code(c) for c in model.operatorCodes]
    if schema.BuiltinOperator.TRANSPOSE not in codes:
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.TRANSPOSE
        code.version = 1
        model.operatorCodes.append(code)
        codes.append(schema.BuiltinOperator.TRANSPOSE)
    operator = schema.OperatorT()
    operator.opcodeIndex = codes.index(schema.BuiltinOperator.TRANSPOSE)
    operator.inputs, operator.outputs = [before, len(graph.tensors) - 2], [len(graph.tensors) - 1]
    operator.builtinOptionsType = schema.BuiltinOptions.TransposeOptions
    operator.builtinOptions = schema.TransposeOptionsT()
    graph.operators.append(operator)
    graph.outputs[output_index] = len(graph.tensors) - 1
    for signature in model.signatureDefs or []:
        for entry in signature.outputs:
            if entry.tensorIndex == before:
                entry.tensorIndex = len(graph.tensors) - 1
