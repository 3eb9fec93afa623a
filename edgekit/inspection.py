"""``edgekit inspect``: what a model file is, what it takes and gives, and how integer it is."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.audit import QuantizationAudit, audit_model
from edgekit.runtimes import open_runtime
from edgekit.runtimes.base import TensorSpec
from edgekit.runtimes.formats import IMX500, imx500_tensors, open_model_file
from edgekit.runtimes.sparsity import SparsityReport, weight_sparsity


@dataclass(frozen=True)
class ModelInfo:
    path: str
    format: str
    backend: str
    engine: str
    size_bytes: int
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    audit: QuantizationAudit
    precision: str = "f32"  # what float layers run in with the engine's defaults
    sparsity: SparsityReport | None = None
    compiled_for: str | None = None  # the accelerator a compiled artifact (a QNN context) was built for
    simulated: str | None = None  # the vendor's simulator that runs it here, when no such accelerator is present

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "format": self.format, "backend": self.backend, "engine": self.engine,
            "size_bytes": self.size_bytes, "sha256": self.sha256,
            "inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs],
            "audit": self.audit.to_dict(), "precision": self.precision,
            "sparsity": self.sparsity.to_dict() if self.sparsity else None,
            "compiled_for": self.compiled_for, "simulated": self.simulated,
        }


def inspect_model(path: str | os.PathLike[str], *, backend: str | None = None, isolated: bool = False) -> ModelInfo:
    """Describe a model file: format, engine, size, sha256, I/O specs, quantization audit and weight sparsity.

    Raises:
        UnsupportedModelError: The file is not a usable model.
        MissingDependencyError: No engine to read it is installed.
    """
    model = open_model_file(path)
    if model.format == IMX500:  # no engine here runs it: what the package itself declares
        inputs, outputs = imx500_tensors(model.path)
        return ModelInfo(path=str(Path(model.path)), format=model.format, backend="imx500",
                         engine="Sony IMX500 (runs on the Raspberry Pi AI Camera's sensor)",
                         size_bytes=model.size_bytes, sha256=model.sha256(), inputs=inputs, outputs=outputs,
                         audit=audit_model(model), precision="int8 (IMX500)", sparsity=weight_sparsity(model),
                         compiled_for="Sony IMX500")
    with open_runtime(model, backend=backend, isolated=isolated) as runtime:
        return ModelInfo(
            path=str(Path(model.path)), format=model.format, backend=runtime.backend, engine=runtime.engine,
            size_bytes=model.size_bytes, sha256=model.sha256(), inputs=runtime.inputs, outputs=runtime.outputs,
            audit=audit_model(model), precision=runtime.precision, sparsity=weight_sparsity(model),
            compiled_for=runtime.compiled_for, simulated=runtime.simulated,
        )
