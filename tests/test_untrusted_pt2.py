"""A .pt2 file is untrusted input: no member of it runs code unless the user passes --trust-pickle.

Each crafted file holds a payload that creates a marker file when unpickled, at pickle protocols 0, 1, 2 and
5 (protocols 0 and 1 have no header byte to spot), in every place ``torch.export.load`` unpickles: the sample
inputs (raw and as a nested ``torch.save`` zip), a weight and a constant stored as pickles, an opaque
constant (stdlib pickle) and a TorchScript custom object; plus an AOTInductor package (native code). The
test asserts the marker is absent, so it fails wherever a payload ran; a control shows the same payload does
run when trusted.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import edgekit

pytestmark = [pytest.mark.torch]
PROTOCOLS = (0, 1, 2, 5)
EDGEKIT = str(Path(sys.executable).with_name("edgekit"))


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")  # creating the file is the side effect the tests look for


@pytest.fixture(scope="module")
def clean_pt2(tmp_path_factory) -> Path:
    import torch

    class Small(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.linear(x) + torch.tensor([1.0, 2.0, 3.0])

    path = tmp_path_factory.mktemp("pt2") / "small.pt2"
    torch.export.save(torch.export.export(Small(), (torch.randn(1, 4),)), path)
    return path


def _rewrite(source: Path, target: Path, change) -> Path:
    """Copy the archive member by member; ``change(name, data) -> {name: data}`` (empty drops the member)."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        root = archive.namelist()[0].split("/")[0]
        members = {info.filename[len(root) + 1:]: archive.read(info) for info in archive.infolist()}
        for name, data in change(members).items():
            out.writestr(f"{root}/{name}", data)
    return target


def _config(members: dict[str, bytes], name: str, edit) -> None:
    config = json.loads(members[name])
    edit(config["config"])
    members[name] = json.dumps(config).encode()


def _crafted(clean: Path, folder: Path, place: str, protocol: int) -> Path:
    import torch

    payload = pickle.dumps(_Payload(folder / "ran"), protocol=protocol)

    def change(members: dict[str, bytes]) -> dict[str, bytes]:
        weights, constants = "data/weights/model_weights_config.json", "data/constants/model_constants_config.json"
        if place == "sample inputs":
            members["data/sample_inputs/model.pt"] = payload
        elif place == "sample inputs (torch.save zip)":
            buffer = io.BytesIO()
            torch.save(_Payload(folder / "ran"), buffer, pickle_protocol=protocol)
            members["data/sample_inputs/model.pt"] = buffer.getvalue()
        elif place == "pickled weight":
            _config(members, weights, lambda c: c["linear.weight"].update(use_pickle=True))
            members["data/weights/" + json.loads(members[weights])["config"]["linear.weight"]["path_name"]] = payload
        elif place == "pickled constant":
            _config(members, constants, lambda c: next(iter(c.values())).update(use_pickle=True))
            members["data/constants/" + next(iter(json.loads(members[constants])["config"].values()))["path_name"]] \
                = payload
        elif place in ("opaque constant", "custom object"):
            member = "opaque_obj_0" if place == "opaque constant" else "custom_obj_0"
            _config(members, constants, lambda c: c.update(extra={"path_name": member, "is_param": False,
                                                                   "use_pickle": True, "tensor_meta": None}))
            members["data/constants/" + member] = payload
        return members

    return _rewrite(clean, folder / f"crafted-{protocol}.pt2", change)


PLACES = ("sample inputs", "sample inputs (torch.save zip)", "pickled weight", "pickled constant", "opaque constant",
          "custom object")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("place", PLACES)
def test_a_payload_in_any_member_torch_unpickles_is_refused_and_never_runs(clean_pt2, tmp_path, place, protocol):
    path = _crafted(clean_pt2, tmp_path, place, protocol)
    with pytest.raises(edgekit.UnsupportedModelError, match=r"holds pickled data beyond tensors.*trust_pickle=True"):
        edgekit.convert(path, "onnx-fp32", output_dir=tmp_path / "out", validate_outputs=False)
    assert not (tmp_path / "ran").exists(), f"the payload in the {place} (protocol {protocol}) ran"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_same_payload_runs_when_trusted_so_the_refusal_above_is_real(clean_pt2, tmp_path):
    import torch
    from edgekit.converters._pt2 import load_program

    path = _crafted(clean_pt2, tmp_path, "sample inputs", 0)
    with contextlib.suppress(edgekit.EdgekitError):
        load_program(torch, path, trust_pickle=True)
    assert (tmp_path / "ran").exists()


def test_an_aotinductor_package_is_native_code_and_refused(clean_pt2, tmp_path):
    def change(members):
        members["data/aotinductor/model/model.so"] = b"\x7fELF not really"
        return members

    path = _rewrite(clean_pt2, tmp_path / "aoti.pt2", change)
    with pytest.raises(edgekit.UnsupportedModelError, match="AOTInductor package.*trust_pickle=True"):
        edgekit.convert(path, "onnx-fp32", output_dir=tmp_path / "out", validate_outputs=False)


def test_the_guard_is_lifted_after_a_refusal_and_a_clean_file_still_converts(clean_pt2, tmp_path):
    import torch
    from edgekit.converters._pt2 import GUARDED

    before = {(m, a): getattr(sys.modules[m], a) for m, a in GUARDED if m in sys.modules}
    with pytest.raises(edgekit.UnsupportedModelError):
        edgekit.convert(_crafted(clean_pt2, tmp_path, "sample inputs", 2), "onnx-fp32", output_dir=tmp_path)
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ
    for (module, attribute), original in before.items():
        assert getattr(sys.modules[module], attribute) is original
    (result,) = edgekit.convert(clean_pt2, "onnx-fp32", output_dir=tmp_path / "ok")
    assert result.passed
    buffer = io.BytesIO()
    torch.save(datetime.date(2026, 12, 4), buffer)  # not a type the weights-only unpickler allows
    buffer.seek(0)
    assert torch.load(buffer, weights_only=False) == datetime.date(2026, 12, 4)


def test_torch_still_unpickles_through_the_places_edgekit_guards():
    """A torch upgrade that renames one of these would let its loader through unguarded: fail loudly instead."""
    import importlib

    from edgekit.converters._pt2 import GUARDED

    for module, attribute in GUARDED:
        assert hasattr(importlib.import_module(module), attribute), f"{module}.{attribute} is gone: review _pt2.py"
    source = Path(importlib.import_module("torch.export.pt2_archive._package").__file__).read_text()
    assert source.count("pickle.loads(") == 1 and "_pickle_load_obj(" in source and "_load_aoti(" in source


def test_the_command_line_says_it_in_one_line(clean_pt2, tmp_path):
    path = _crafted(clean_pt2, tmp_path, "pickled weight", 0)
    done = subprocess.run([EDGEKIT, "convert", str(path), "--to", "onnx-fp32", "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "--trust-pickle" in done.stderr and not (tmp_path / "ran").exists()
