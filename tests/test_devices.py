"""Machine description: the 32-bit userland trap on 64-bit Raspberry Pi kernels, boards, CPUs."""

from __future__ import annotations

import pytest

from edgekit.devices import interpreter_arch, read_board, read_cpu_name, userland_warnings


@pytest.mark.parametrize(
    ("kernel", "bits", "arch", "warned"),
    [
        ("aarch64", 64, "aarch64", False),  # 64-bit Raspberry Pi OS
        ("aarch64", 32, "armv7l", True),  # 64-bit kernel, 32-bit userland: the classic trap
        ("armv7l", 32, "armv7l", True),  # 32-bit Raspberry Pi OS on a Pi 3/4
        ("armv6l", 32, "armv6l", True),  # Pi Zero / Pi 1
        ("x86_64", 64, "x86_64", False),
        ("x86_64", 32, "i686", False),
    ],
)
def test_userland_comes_from_the_interpreter_not_uname(kernel, bits, arch, warned):
    detected = interpreter_arch(kernel, bits)
    assert detected == arch
    warnings = userland_warnings(detected)
    assert bool(warnings) is warned
    if warned:
        assert "64-bit Raspberry Pi OS" in warnings[0]


def test_board_and_cpu_from_fixture_trees(tmp_path):
    (tmp_path / "device-tree").mkdir()
    (tmp_path / "device-tree" / "model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.5\x00")
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nBogoMIPS\t: 108.00\nHardware\t: BCM2835\n"
                                      "Model\t\t: Raspberry Pi 4 Model B Rev 1.5\n")
    assert read_board(tmp_path) == "Raspberry Pi 4 Model B Rev 1.5"
    assert read_cpu_name(tmp_path) == "Raspberry Pi 4 Model B Rev 1.5"
    assert read_board(tmp_path / "missing") is None


def test_missing_engine_on_32bit_arm_says_to_move_to_64bit(monkeypatch):
    import platform
    import struct

    from edgekit.runtimes.errors import MissingDependencyError

    monkeypatch.setattr(platform, "machine", lambda: "armv7l")
    monkeypatch.setattr(struct, "calcsize", lambda fmt: 4)
    message = str(MissingDependencyError("the litert engine", "litert"))
    assert "pip install 'edgekit[litert]'" in message and "install 64-bit Raspberry Pi OS" in message
