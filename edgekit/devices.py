"""``edgekit devices``: this machine and what each engine can use on it.

Never imports an engine that is not installed (installation is checked with
``importlib.util.find_spec``), so it runs on a bare Raspberry Pi install.
"""

from __future__ import annotations

import logging
import os
import platform
import struct
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from edgekit.runtimes import BACKENDS
from edgekit.runtimes.npu import IMX500_FIRMWARE, RKNPU_DRIVER_PATHS

log = logging.getLogger("edgekit")

_PROC = Path("/proc")
_64BIT_MACHINES = {"aarch64", "arm64", "x86_64", "amd64"}


@dataclass(frozen=True)
class SystemInfo:
    os: str
    arch: str  # the interpreter's architecture, which decides which wheels install
    kernel_arch: str  # uname -m: a 64-bit kernel may run a 32-bit userland
    cpu: str
    cores: int
    python: str
    board: str | None = None  # e.g. "Raspberry Pi 5 Model B Rev 1.0"
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class EngineInfo:
    backend: str
    installed: bool
    implementation: str | None = None
    version: str | None = None
    accelerators: tuple[str, ...] = ()
    install_hint: str | None = None
    error: str | None = None
    npu: str | None = None  # "present: ..." or "absent: what to install"

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["accelerators"] = list(self.accelerators)
        return data


@dataclass(frozen=True)
class NpuInfo:
    """An NPU a board may carry beside its CPU: what edgekit looked for, what it found, and what is missing
    (with how to get it). ``present`` only when every piece is there."""

    name: str
    found: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def present(self) -> bool:
        return not self.missing

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "present": self.present, "found": list(self.found), "missing": list(self.missing)}


_LIBRARY_FOLDERS = ("usr/lib", "usr/lib/aarch64-linux-gnu", "usr/local/lib", "lib")


def describe_npus(root: Path = Path("/"), installed: Any = None) -> list[NpuInfo]:
    """The Rockchip RKNPU (its kernel driver, the board's librknnrt.so, rknn-toolkit-lite2), the Qualcomm
    Hexagon HTP (FastRPC access to the DSP, onnxruntime-qnn) and the Raspberry Pi AI Camera's IMX500 (the sensor
    seen by the kernel, a video device, its firmware, Raspberry Pi's packager) as this machine has them. ``root`` and
    ``installed`` (distribution -> version or None) let a test describe another machine."""
    installed = installed or _package_version

    def first(paths: list[Path]) -> Path | None:
        return next((p for p in paths if p.exists()), None)

    def npu(name: str, pieces: list[tuple[str, Any, str]]) -> NpuInfo:
        """``pieces``: (what, what was seen or None, how to get it)."""
        found = tuple(f"{what} ({seen})" for what, seen, _ in pieces if seen)
        missing = tuple(f"{what}: {fix}" for what, seen, fix in pieces if not seen)
        return NpuInfo(name, found, missing)

    return [
        npu("Rockchip RKNPU", [
            ("RKNPU kernel driver", first([root / path for path in RKNPU_DRIVER_PATHS]),
             "a Rockchip board image whose kernel carries the RKNPU driver (RK3588/3576/3566/3562, RV1106)"),
            ("librknnrt.so", first([root / folder / "librknnrt.so" for folder in _LIBRARY_FOLDERS]),
             "the board's librknnrt.so from Rockchip's rknn-toolkit2 release (runtime folder) in /usr/lib; "
             "edgekit does not bundle it"),
            ("rknn-toolkit-lite2", installed("rknn-toolkit-lite2"), "pip install rknn-toolkit-lite2"),
        ]),
        npu("Qualcomm Hexagon HTP", [
            ("DSP access", first([root / "dev/fastrpc-cdsp", root / "dev/adsprpc-smd"]),
             "a Qualcomm board image with FastRPC (/dev/fastrpc-cdsp; QCS6490: Rubik Pi 3, RB3 Gen 2)"),
            ("onnxruntime-qnn", installed("onnxruntime-qnn"), "pip install onnxruntime-qnn (the QNN execution "
                                                              "provider)"),
        ]),
        npu("Sony IMX500 (Raspberry Pi AI Camera)", [
            ("imx500 sensor", _v4l2_named(root, "imx500"),
             "connect the AI Camera to the Pi's camera port and boot with it (the kernel then names an imx500 "
             "V4L2 sub-device; `rpicam-hello --list-cameras` lists it)"),
            ("video device", first(sorted((root / "dev").glob("video*")) if (root / "dev").is_dir() else []),
             "a camera the kernel has bound (/dev/video*)"),
            ("IMX500 firmware", first([root / path for path in IMX500_FIRMWARE]),
             "sudo apt install imx500-all (the camera's firmware and Raspberry Pi's model zoo)"),
            ("imx500-package", first([root / "usr/bin/imx500-package"]),
             "sudo apt install imx500-tools (turns edgekit's <stem>_imx500_packerOut.zip into network.rpk)"),
        ]),
    ]


def _v4l2_named(root: Path, sensor: str) -> str | None:
    """The V4L2 node (device or sub-device) of the ``sensor`` driver, found as picamera2 finds the IMX500 (the
    node's driver module) or by the node's kernel name, as ``<node>: <name>``."""
    folder = root / "sys/class/video4linux"
    for node in sorted(folder.iterdir()) if folder.is_dir() else []:
        try:
            name = (node / "name").read_text().strip()
        except OSError:
            name = ""
        module = node / "device/driver/module"
        if name.startswith(sensor) or (module.is_symlink() and sensor in os.readlink(module)):
            return f"{node.name}: {name or sensor}"
    return None


def interpreter_arch(kernel_arch: str, pointer_bits: int) -> str:
    """The userland architecture, from the interpreter's pointer size rather than ``uname -m``:
    64-bit Raspberry Pi kernels are often paired with a 32-bit (armhf) userland."""
    if pointer_bits == 32 and kernel_arch in ("aarch64", "arm64", "armv8l"):
        return "armv7l"
    if pointer_bits == 32 and kernel_arch in ("x86_64", "amd64"):
        return "i686"
    return kernel_arch


def userland_warnings(arch: str) -> tuple[str, ...]:
    if arch.startswith("arm") and arch not in _64BIT_MACHINES:
        return (
            "32-bit ARM userland: pip finds no LiteRT, ONNX Runtime or OpenVINO wheels for it; "
            "install 64-bit Raspberry Pi OS (or another arm64 OS)",
        )
    return ()


def read_board(root: Path = _PROC) -> str | None:
    """The device-tree model string (Raspberry Pi and most ARM boards), if any."""
    try:
        return (root / "device-tree" / "model").read_bytes().rstrip(b"\x00\n").decode("utf-8", "replace") or None
    except OSError:
        return None


def read_cpu_name(root: Path = _PROC) -> str:
    try:
        text = (root / "cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in text.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def describe_system() -> SystemInfo:
    kernel_arch = platform.machine().lower()
    arch = interpreter_arch(kernel_arch, struct.calcsize("P") * 8)
    return SystemInfo(
        os=f"{platform.system()} {platform.release()}", arch=arch, kernel_arch=kernel_arch, cpu=read_cpu_name(),
        cores=os.cpu_count() or 1, python=platform.python_version(), board=read_board(),
        warnings=userland_warnings(arch),
    )


def _package_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _litert_accelerators() -> tuple[str, ...]:
    from edgekit.runtimes._litert import find_system_delegates

    return ("cpu (XNNPACK)",) + tuple(f"{kind} ({path})" for path, kind in find_system_delegates().items())


def _ort_accelerators() -> tuple[str, ...]:
    import onnxruntime

    return tuple(onnxruntime.get_available_providers())


def _openvino_accelerators() -> tuple[str, ...]:
    from edgekit.runtimes._openvino import core

    return tuple(core().available_devices)


NPU_HINTS = {
    "litert": "install your NPU's LiteRT delegate (Coral: libedgetpu1-std; NXP i.MX: the VX delegate; "
              "Arm Ethos-U: the Ethos-U delegate) and pass delegate='/path/lib.so'",
    "onnxruntime": "install an onnxruntime build with an NPU execution provider (onnxruntime-qnn for Qualcomm, "
                   "VitisAI for AMD, NNAPI on Android, RKNPU for Rockchip, CANN for Huawei)",
    "openvino": "install the Intel NPU driver (the NPU plugin ships in the openvino wheel)",
}


def npu_status(backend: str, accelerators: tuple[str, ...]) -> str:
    """Whether an engine can reach an NPU here, and if not, what to install."""
    from edgekit.runtimes._ort import PROVIDERS_BY_DEVICE

    if backend == "litert":
        found = [a for a in accelerators if a.startswith("npu ")]
    elif backend == "onnxruntime":
        found = [a for a in accelerators if a in PROVIDERS_BY_DEVICE["npu"]]
    else:
        found = [a for a in accelerators if a.split(".")[0] == "NPU"]
    return f"present: {', '.join(found)}" if found else f"absent: {NPU_HINTS[backend]}"


_DISTRIBUTIONS = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime",
                  "tensorflow": "tensorflow", "onnxruntime": "onnxruntime", "openvino": "openvino"}
_ACCELERATORS = {"litert": _litert_accelerators, "onnxruntime": _ort_accelerators,
                 "openvino": _openvino_accelerators}


def describe_engines() -> list[EngineInfo]:
    """Each engine: installed or not, which implementation and version, and the accelerators it sees."""
    engines = []
    # the rknn backend drives one vendor's NPU: describe_npus reports it (driver, librknnrt, rknn-toolkit-lite2)
    for backend in (b for b in BACKENDS.values() if b.name in _ACCELERATORS):
        module = backend.installed_module()
        if module is None:
            engines.append(EngineInfo(backend.name, False, install_hint=f"pip install 'edgekit[{backend.extra}]'"))
            continue
        version = _package_version(_DISTRIBUTIONS.get(module, module))
        try:
            accelerators = _ACCELERATORS[backend.name]()
            error = None
        except Exception as exc:  # noqa: BLE001 - a broken engine install is reported, not fatal to the listing
            accelerators, error = (), f"{type(exc).__name__}: {exc}".splitlines()[0]
            log.debug("engine %s failed to report accelerators", backend.name, exc_info=True)
        engines.append(EngineInfo(backend.name, True, module, version, accelerators, error=error,
                                  npu=npu_status(backend.name, accelerators)))
    return engines

