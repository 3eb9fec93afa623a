"""The CPU an int8 model is for: named from its flags, and the settings each engine's int8 gets for it.

Asserted per CPU description (never by timing): what /proc/cpuinfo says -> the description -> ONNX Runtime's
activation type and reduce_range, NNCF's overflow fix; and that a conversion's report records them."""

from __future__ import annotations

import pytest
from conftest import make_conv_onnx
from edgekit.converters._onnx import int8_defaults
from edgekit.converters._openvino import overflow_fix_for
from edgekit.runtimes import cpu as cpus
from edgekit.runtimes.errors import ConversionError

import edgekit

X86_FLAGS = {  # trimmed real flag lines
    "fpu sse4_2 avx avx2 fma": cpus.X86_WITHOUT_VNNI,  # AMD EPYC (Zen 2/3), Skylake, Haswell
    "fpu avx2 avx512f avx512_vnni": cpus.X86_VNNI,  # Cascade Lake, Ice Lake, Zen 4
    "fpu avx2 avx_vnni": cpus.X86_VNNI,  # Alder Lake (AVX-VNNI without AVX-512)
    "fpu avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8": cpus.X86_AMX,  # Sapphire Rapids
}
ARM_FEATURES = {
    "fp asimd evtstrm crc32 cpuid": cpus.ARM64_WITHOUT_DOTPROD,  # Cortex-A72: Raspberry Pi 4
    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp":
        cpus.ARM64_DOTPROD,  # Cortex-A76: Raspberry Pi 5
    "fp asimd asimddp sve i8mm bf16 sve2": cpus.ARM64_I8MM,  # Neoverse V1/N2, Cortex-A710
}


@pytest.mark.parametrize("flags, expected", X86_FLAGS.items())
def test_x86_is_named_by_its_int8_dot_products(flags, expected):
    assert cpus.describe_cpu("auto", cpuinfo=f"processor : 0\nflags\t\t: {flags}\n", machine="x86_64") == expected


@pytest.mark.parametrize("features, expected", ARM_FEATURES.items())
def test_arm64_is_named_by_its_int8_dot_products(features, expected):
    assert cpus.describe_cpu("auto", cpuinfo=f"processor : 0\nFeatures\t: {features}\n", machine="aarch64") == expected


@pytest.mark.parametrize("for_cpu, activation_type, reduce_range, overflow_fix", [
    ("x86", "uint8", False, None),
    ("x86-amx", "uint8", False, None),
    ("x86-vnni", "uint8", False, None),
    ("x86-avx2", "uint8", True, "enable"),
    ("arm64", "int8", False, None),
    ("arm64-neon", "int8", False, None),
    ("arm64-dotprod", "int8", False, None),
    ("arm64-i8mm", "int8", False, None),
])
def test_each_cpu_gets_its_engines_int8_settings(for_cpu, activation_type, reduce_range, overflow_fix):
    """U8S8 on x86 (vpmaddubsw/vpdpbusd take u8 x s8), S8S8 on arm64; 7-bit weights (ONNX) and every
    layer's overflow fix (NNCF) only where vpmaddubsw's int16 saturates: x86 without VNNI."""
    cpu = cpus.describe_cpu(for_cpu)
    defaults = int8_defaults(for_cpu)
    assert defaults["for_cpu"] == cpu and defaults["int8_instructions"] == cpus.INT8_INSTRUCTIONS[cpu]
    assert (defaults["activation_type"], defaults["weight_type"], defaults["reduce_range"]) == \
        (activation_type, "int8", reduce_range)
    assert overflow_fix_for(cpu) == overflow_fix


def test_an_unknown_cpu_is_refused_with_the_choices():
    with pytest.raises(ConversionError, match=r"for_cpu must be auto or one of x86, x86-amx.*got 'x86-avx512'"):
        cpus.describe_cpu("x86-avx512")


def test_the_report_records_the_cpu_and_its_choices(tmp_path):
    source = make_conv_onnx(tmp_path / "convnet.onnx")
    (result,) = edgekit.convert(source, "onnx-int8", calibration="random", calib_size=8, validation_size=4,
                                output_dir=tmp_path / "out", for_cpu="x86-avx2")
    options = result.report["options"]
    assert options["for_cpu"] == "x86 (no VNNI)" and options["reduce_range"] is True
    assert "vpmaddubsw" in options["int8_instructions"]
