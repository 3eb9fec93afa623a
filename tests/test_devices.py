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


def test_npus_beside_the_cpu_say_what_was_found_and_what_is_missing(tmp_path):
    """A Rockchip board with its driver, librknnrt.so and rknn-toolkit-lite2 has an RKNPU; a Qualcomm board
    with FastRPC but no onnxruntime-qnn has not, and the listing says what to install."""
    from edgekit.devices import describe_npus

    (tmp_path / "sys/module/rknpu").mkdir(parents=True)
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/librknnrt.so").write_bytes(b"\x7fELF")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/fastrpc-cdsp").write_bytes(b"")
    versions = {"rknn-toolkit-lite2": "2.5.0"}
    rknpu, htp, camera = describe_npus(tmp_path, versions.get)
    assert rknpu.present and rknpu.found == (f"RKNPU kernel driver ({tmp_path}/sys/module/rknpu)",
                                             f"librknnrt.so ({tmp_path}/usr/lib/librknnrt.so)",
                                             "rknn-toolkit-lite2 (2.5.0)")
    assert not htp.present and htp.found == (f"DSP access ({tmp_path}/dev/fastrpc-cdsp)",)
    assert htp.missing == ("onnxruntime-qnn: pip install onnxruntime-qnn (the QNN execution provider)",)
    assert not camera.present and camera.found == ()
    bare = describe_npus(tmp_path / "nothing", lambda name: None)
    assert not any(n.present for n in bare) and "RKNPU kernel driver: a Rockchip board image" in bare[0].missing[0]
    assert bare[1].to_dict()["present"] is False
