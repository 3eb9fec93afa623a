"""The NPU chips edgekit compiles for, by name: one table per vendor, shared by the converters (``--for``),
the runtimes (what an artifact was built for) and ``edgekit devices``. Facts only; nothing is imported."""

from __future__ import annotations

from edgekit.runtimes.errors import UnsupportedModelError

#: Qualcomm Hexagon HTP generations ONNX Runtime's QNN provider compiles for (its ``htp_arch`` option)
HTP_GENERATIONS = ("68", "69", "73", "75", "79", "81")
#: SoCs people buy, by the HTP generation their NPU is: QCS6490 (Rubik Pi 3, RB3 Gen 2), Snapdragon 8 Gen 2,
#: 8 Gen 3, 8 Elite, 8 Elite Gen 5
HTP_BY_SOC = {"qcs6490": "68", "sm8550": "73", "sm8650": "75", "sm8750": "79", "sm8850": "81"}
#: every ``--for`` value qnn-int8 takes: a SoC, or an HTP generation as ``htp-v68``
QNN_CHIPS = (*HTP_BY_SOC, *(f"htp-v{g}" for g in HTP_GENERATIONS))


def htp_generation(chip: str) -> str:
    """``qcs6490`` or ``htp-v68`` -> ``"68"``; an unknown name is an error listing the known ones."""
    name = chip.strip().lower()
    if name in HTP_BY_SOC:
        return HTP_BY_SOC[name]
    if name.startswith("htp-v") and name[5:] in HTP_GENERATIONS:
        return name[5:]
    raise UnsupportedModelError(f"unknown Qualcomm chip '{chip}'; choose a SoC "
                                f"({', '.join(f'{s} = HTP v{g}' for s, g in HTP_BY_SOC.items())}) or an HTP "
                                f"generation ({', '.join(f'htp-v{g}' for g in HTP_GENERATIONS)})")

#: Rockchip platforms rknn-toolkit2 builds for: RK3588 (Orange Pi 5, Rock 5), RK3576, RK3566/RK3568 (Radxa
#: Zero 3, Rock 3), RK3562, RV1106/RV1103 (Luckfox Pico)
RKNN_PLATFORMS = ("rk3588", "rk3576", "rk3568", "rk3566", "rk3562", "rv1106", "rv1103")
#: every NPU chip ``--for`` names
NPU_CHIPS = (*QNN_CHIPS, *RKNN_PLATFORMS)
#: where a Rockchip board's kernel shows its RKNPU driver
RKNPU_DRIVER_PATHS = ("sys/kernel/debug/rknpu", "sys/module/rknpu")
#: the Sony IMX500's on-chip memory for a network, weights and activations together (the converter's default for
#: the chip: 8 MB less 128 bytes)
IMX500_MEMORY_BYTES = 8388480
#: what a Raspberry Pi with the AI Camera shows: the firmware the camera loads (Raspberry Pi's imx500-all package)
IMX500_FIRMWARE = ("lib/firmware/imx500_loader.fpk", "lib/firmware/imx500_firmware.fpk")
