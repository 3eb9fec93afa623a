"""Qualcomm Hexagon HTP through ONNX Runtime's QNN execution provider (the ``onnxruntime-qnn`` plugin).

A qnn-int8 artifact is an ONNX file holding one ``EPContext`` node: a QNN context binary compiled ahead of
time for one HTP generation. Only the QNN provider can run it. On a Snapdragon/QCS board that is the HTP
itself; on x86-64 the wheel's ``libQnnHtp.so`` is Qualcomm's HTP *simulator*, which is right about outputs and
says nothing about the device's latency. The wheel's Qualcomm libraries are never bundled by edgekit: users
install ``onnxruntime-qnn`` themselves (``pip install 'edgekit[qnn]'``).

This module is light on purpose (no onnx package, no quantizer): the device path loads through it.
"""

from __future__ import annotations

import platform
from typing import Any

from edgekit.runtimes._onnx_proto import OnnxSummary
from edgekit.runtimes.errors import DeviceError, MissingDependencyError, UnsupportedModelError
from edgekit.runtimes.npu import HTP_GENERATIONS

EP_NAME = "QNNExecutionProvider"
#: the chip a qnn-int8 artifact was compiled for, in its metadata (edgekit's; read by ``inspect``)
META_CHIP = "edgekit.qnn.chip"
#: ONNX Runtime's own record of a compiled context, ``v2:6:<QNN API>:<SDK>:<htp_arch>:...``
META_COMPATIBILITY = f"ep_compatibility_info.{EP_NAME}"


def context_info(summary: OnnxSummary | None) -> dict[str, Any] | None:
    """What a QNN EPContext model says about itself: the HTP generation (from ONNX Runtime's compatibility
    record), the chip (edgekit's metadata), the QNN SDK that compiled it; None for any other ONNX model."""
    if summary is None:
        return None
    contexts = [n for n in summary.nodes if n.op_type == "EPContext"]
    if not contexts:
        return None
    sources = {n.attributes.get("source", "") for n in contexts}
    if sources - {EP_NAME, ""}:
        raise UnsupportedModelError(f"this EPContext model was compiled by {', '.join(sorted(sources))}; edgekit "
                                    f"runs EPContext models of the {EP_NAME} only")
    if any(n.attributes.get("embed_mode", 1) != 1 for n in contexts):
        # embed_mode 0 names a .bin file by path: an untrusted model must not choose what gets read
        raise UnsupportedModelError("this EPContext model points at a context binary in another file "
                                    "(embed_mode 0); edgekit loads only context binaries embedded in the model")
    fields = summary.metadata.get(META_COMPATIBILITY, "").split(":")
    htp_arch = fields[4] if len(fields) > 4 and fields[4] in HTP_GENERATIONS else None
    return {"htp_arch": htp_arch, "chip": summary.metadata.get(META_CHIP),
            "qnn_sdk": next((n.attributes["ep_sdk_version"] for n in contexts if "ep_sdk_version" in n.attributes),
                            None)}


def describe_context(context: dict[str, Any]) -> str:
    """E.g. "Qualcomm HTP v75 (sm8650), QNN SDK v2.51.0"."""
    chip = f" ({context['chip']})" if context.get("chip") and not context["chip"].startswith("HTP") else ""
    sdk = f", QNN SDK {'.'.join(context['qnn_sdk'].split('.')[:3])}" if context.get("qnn_sdk") else ""
    return f"Qualcomm HTP v{context.get('htp_arch') or '?'}{chip}{sdk}"


def simulated() -> bool:
    """Whether the HTP here is Qualcomm's simulator: the x86-64 ``libQnnHtp.so`` is one; arm64 drives the DSP."""
    return platform.machine().lower() in ("x86_64", "amd64", "i686")


def describe_htp(htp_arch: str | None) -> str:
    where = "simulator (x86-64 libQnnHtp: outputs are the device's, timings are not)" if simulated() else "device"
    return f"Qualcomm HTP v{htp_arch or '?'} {where}"


_registered: set[int] = set()


def provider_devices(ort: Any) -> list[Any]:
    """Register the QNN plugin with this ONNX Runtime (once per process) and return its devices."""
    try:
        import onnxruntime_qnn
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime-qnn (the Qualcomm HTP provider and its simulator)", "qnn") from exc
    if id(ort) not in _registered:
        if not hasattr(ort, "register_execution_provider_library"):
            raise DeviceError(f"onnxruntime {ort.__version__} cannot load plugin providers like onnxruntime-qnn; "
                              "upgrade onnxruntime to 1.24.2 or newer")
        try:
            ort.register_execution_provider_library(EP_NAME, onnxruntime_qnn.get_library_path())
        except Exception as exc:  # noqa: BLE001 - ORT raises plain Exception/RuntimeError when it cannot
            if "already registered" not in str(exc):
                raise DeviceError(f"onnxruntime-qnn's provider did not register: {str(exc).splitlines()[0]}") \
                    from exc
        _registered.add(id(ort))
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    if not devices:
        raise DeviceError("onnxruntime-qnn registered but offers no device here")
    return devices


def htp_session_options(ort: Any, htp_arch: str | None, options: Any = None, **config: str) -> Any:
    """Session options that run everything on the HTP: with CPU fallback disabled, a node the HTP cannot run
    is an error naming it, not a silent CPU island. ``config`` adds session config entries (``ep.context_*``)."""
    import onnxruntime_qnn

    options = options or ort.SessionOptions()
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    for key, value in config.items():
        options.add_session_config_entry(key.replace("__", "."), value)
    provider = {"backend_path": onnxruntime_qnn.get_qnn_htp_path()}
    if htp_arch:
        provider["htp_arch"] = htp_arch
    options.add_provider_for_devices(provider_devices(ort), provider)
    return options
