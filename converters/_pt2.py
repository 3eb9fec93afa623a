"""Reading a ``.pt2`` file (a ``torch.export`` ExportedProgram) without running code from it.

A ``.pt2`` is a zip whose members ``torch.export.load`` may unpickle with ``weights_only=False`` (sample
inputs, pickled weights and constants), hand to the stdlib ``pickle`` (opaque constants) or the TorchScript
unpickler (custom objects), or load as a compiled shared library (AOTInductor packages). Any of those runs the
file's code. Guessing which members are pickles from their first bytes does not work (a protocol 0 pickle has
no header), so the guard sits where torch unpickles instead: while ``load_program`` runs, every ``torch.load``
is forced to ``weights_only=True`` (torch's own ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` switch, which overrides an
explicit ``weights_only=False``) and the other three loaders refuse. ``trust_pickle=True`` is torch's plain
behaviour.

``GUARDED`` names the torch internals patched here; a test fails when a torch upgrade renames one of them.
"""

from __future__ import annotations

import os
import pickle
import threading
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgekit.runtimes.errors import UnsupportedModelError, first_line, spelled

_FORCE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
_FORCE_NOT = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"  # torch refuses both set at once
# (module, attribute) torch.export.load reaches other than torch.load
GUARDED = (("torch.export.pt2_archive._package", "pickle"), ("torch.export.pt2_archive._package", "_load_aoti"),
           ("torch._C", "_pickle_load_obj"))
_LOCK = threading.Lock()  # the switches are process-wide: one guarded load at a time


class PickleRefused(pickle.UnpicklingError):
    """A loader other than torch's weights-only one was asked to run (not a RuntimeError: torch.export.load
    swallows those and retries an older format)."""


def _refuse(what: str) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PickleRefused(what)

    return refuse


class _RefusingPickle:
    """Stands in for the ``pickle`` module inside torch's archive reader."""

    def __getattr__(self, name: str) -> Any:
        return _refuse(f"an opaque constant would be unpickled with pickle.{name} (arbitrary objects)")


_STAND_INS = {"pickle": _RefusingPickle(),
              "_load_aoti": _refuse("the archive holds an AOTInductor package (compiled native code)"),
              "_pickle_load_obj": _refuse("a TorchScript custom object would be unpickled (runs its class's code)")}


@contextmanager
def _tensors_only() -> Iterator[None]:
    import importlib

    saved_env = {key: os.environ.get(key) for key in (_FORCE, _FORCE_NOT)}
    patched = []
    with _LOCK, warnings.catch_warnings():
        try:
            warnings.simplefilter("ignore")  # the weights-only unpickler's protocol notes: it refuses anyway
            os.environ[_FORCE] = "1"
            os.environ.pop(_FORCE_NOT, None)
            for module_name, attribute in GUARDED:
                module = importlib.import_module(module_name)
                patched.append((module, attribute, getattr(module, attribute)))
                setattr(module, attribute, _STAND_INS[attribute])
            yield
        finally:
            for module, attribute, original in patched:
                setattr(module, attribute, original)
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def load_program(torch: Any, path: Path, *, trust_pickle: bool) -> Any:
    """``torch.export.load(path)``, with pickles limited to tensors and plain containers unless trusted.

    Raises:
        UnsupportedModelError: The file needs code to load (without ``trust_pickle``), or torch cannot read it.
    """
    if not zipfile.is_zipfile(path):
        raise UnsupportedModelError(f"'{path}' is not a .pt2 archive (a zip file); export the model with "
                                    "torch.export.save")
    try:  # registers the quantized_decomposed ops a PT2E-quantized program (QAT or PTQ) is made of
        import torch.ao.quantization.fx._decomposed  # noqa: F401
    except ImportError:  # a torch without them cannot have written such a program either
        pass
    try:
        if trust_pickle:
            return torch.export.load(str(path))
        with _tensors_only():
            return torch.export.load(str(path))
    except pickle.UnpicklingError as exc:
        raise UnsupportedModelError(
            f"'{path}' holds pickled data beyond tensors, and loading it would run its code "
            f"({_refusal_reason(exc)[:160]}); convert it only if you trust where it came from, with "
            f"{spelled('--trust-pickle', 'trust_pickle=True')}") from exc
    except Exception as exc:  # noqa: BLE001 - zip, schema and version errors of many types: translate all
        raise UnsupportedModelError(f"torch cannot read '{path}' as an ExportedProgram (.pt2): "
                                    f"{first_line(exc)[:200]}") from exc


def _refusal_reason(exc: BaseException) -> str:
    """The line of torch's weights-only message that names what was refused (its first lines are advice)."""
    advice = ("Weights only load failed", "Check the documentation", "Please file an issue", "Re-running")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return next((line for line in lines if not line.startswith(advice)), first_line(exc))
