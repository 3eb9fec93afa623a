"""The CPU an int8 model is for, named by the int8 dot-product instructions it has: what decides how int8
pays off and which quantization settings are right (device-safe: reads /proc/cpuinfo, imports no engine).

- x86 with AMX (Sapphire Rapids+) or VNNI (Cascade Lake+, Zen 4+, Alder Lake's AVX-VNNI): u8 x s8 into
  int32 in one instruction; every engine's int8 kernels are 2-4x float's.
- x86 with AVX2 only: ``vpmaddubsw`` adds u8 x s8 pairs into a *saturating* int16, so full-range int8
  weights can overflow (ONNX Runtime's reduce_range and NNCF's overflow fix exist for it), and kernels that
  avoid it (XNNPACK widens to int16 first) run no faster than float.
- arm64 with i8mm (Cortex-A710+, Graviton3) or dotprod (Cortex-A76+: Raspberry Pi 5, Graviton2): ``sdot``
  /``smmla``; plain NEON (Cortex-A72/A53: Raspberry Pi 4/3) multiplies and widens step by step.
"""

from __future__ import annotations

import platform
from pathlib import Path

from edgekit.runtimes.errors import ConversionError, spelled

X86 = "x86"  # an explicit --for x86: a current x86 server or desktop, VNNI assumed
X86_AMX = "x86 (AMX)"
X86_VNNI = "x86 (VNNI)"
X86_WITHOUT_VNNI = "x86 (no VNNI)"
ARM64 = "arm64"  # an explicit --for arm64: any arm64 CPU
ARM64_I8MM = "arm64 (i8mm)"
ARM64_DOTPROD = "arm64 (dotprod)"
ARM64_WITHOUT_DOTPROD = "arm64 (no dotprod)"

#: ``--for`` values and the CPU description each names (``auto``: read from this machine)
FOR_CPU = {"x86": X86, "x86-amx": X86_AMX, "x86-vnni": X86_VNNI, "x86-avx2": X86_WITHOUT_VNNI,
           "arm64": ARM64, "arm64-i8mm": ARM64_I8MM, "arm64-dotprod": ARM64_DOTPROD,
           "arm64-neon": ARM64_WITHOUT_DOTPROD}

#: what computes an int8 dot product on each, as the reports say it
INT8_INSTRUCTIONS = {
    X86: "VNNI assumed (vpdpbusd)",
    X86_AMX: "AMX tiles (tdpbusd) and VNNI",
    X86_VNNI: "VNNI (vpdpbusd: u8 x s8 into int32)",
    X86_WITHOUT_VNNI: "AVX2 vpmaddubsw (u8 x s8 pairs into a saturating int16)",
    ARM64: "NEON (dot products not assumed)",
    ARM64_I8MM: "NEON i8mm (smmla) and dotprod (sdot)",
    ARM64_DOTPROD: "NEON dotprod (sdot)",
    ARM64_WITHOUT_DOTPROD: "NEON multiply-widen (no dot product)",
}


def _cpu_flags(cpuinfo: str | None) -> set[str]:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return set()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):  # x86 says flags, arm64 features
            flags.update(value.split())
    return flags


def is_arm(cpu: str) -> bool:
    return cpu.startswith(ARM64)


def describe_cpu(for_cpu: str = "auto", cpuinfo: str | None = None, machine: str | None = None) -> str:
    """The CPU description of a ``--for`` value; ``auto`` reads this machine's (or ``cpuinfo``'s) flags."""
    if for_cpu != "auto":
        if for_cpu not in FOR_CPU:
            raise ConversionError(f"{spelled('--for', 'for_cpu')} must be auto or one of {', '.join(FOR_CPU)}, "
                                  f"got '{for_cpu}'")
        return FOR_CPU[for_cpu]
    machine = (machine or platform.machine()).lower()
    flags = _cpu_flags(cpuinfo)
    if machine in ("aarch64", "arm64") or machine.startswith("arm"):
        if "i8mm" in flags:
            return ARM64_I8MM
        return ARM64_DOTPROD if "asimddp" in flags else ARM64_WITHOUT_DOTPROD
    if "amx_int8" in flags:
        return X86_AMX
    if flags & {"avx512_vnni", "avx_vnni"}:
        return X86_VNNI
    return X86_WITHOUT_VNNI


_AT_HWCAP, _HWCAP_FPHP, _HWCAP_ASIMDHP = 16, 1 << 9, 1 << 10  # Linux arm64 hwcaps: fp16 scalar and vector


def has_fp16_arithmetic(cpuinfo: str | None = None, machine: str | None = None) -> bool:
    """Whether this arm64 CPU computes in fp16 (Armv8.2-A FEAT_FP16: Cortex-A76 / Raspberry Pi 5 yes, Cortex-A72 /
    Pi 4 no): what XNNPACK reads, from the kernel's hwcaps (as XNNPACK's cpuinfo does), else /proc/cpuinfo.
    x86 is False: XNNPACK's fp16 there converts to fp32 around every operation (slower than fp32)."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("aarch64", "arm64"):
        return False
    if cpuinfo is None:
        try:
            import ctypes

            getauxval = ctypes.CDLL(None).getauxval
            getauxval.restype = ctypes.c_ulong
            hwcap = getauxval(_AT_HWCAP)
            if hwcap:
                return bool(hwcap & _HWCAP_FPHP and hwcap & _HWCAP_ASIMDHP)
        except (OSError, AttributeError):
            pass
    return {"fphp", "asimdhp"} <= _cpu_flags(cpuinfo)
