"""A prepared conversion job (``edgekit.prepare``): the model opened and its data read once, then converted as
often as asked — every conversion judged on the same held-out samples, none reading the source again."""

from __future__ import annotations

import numpy as np
import pytest

import edgekit
from edgekit.pipeline import job as job_module


def _small_module():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()


def _samples(count: int) -> list[dict[str, np.ndarray]]:
    data = np.random.default_rng(3).normal(size=(count, 1, 16)).astype(np.float32)
    return [{"input": row} for row in data]


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_a_prepared_job_converts_again_without_opening_the_source_again(tmp_path, monkeypatch):
    import torch

    opened = []
    real_open = job_module.open_source
    monkeypatch.setattr(job_module, "open_source", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    module = _small_module()
    job = edgekit.prepare(module, example_inputs=(torch.zeros(1, 16),), output_names=["scores"],
                          calibration=_samples(60), calib_size=40, validation_size=20, name="small")
    assert (job.stem, len(job.dataset.calibration), len(job.dataset.validation)) == ("small", 40, 20)

    # the first run's ONNX export lived in its own staging folder, gone when it ended: the second run must
    # export again rather than copy a file that no longer exists
    (fp32,) = edgekit.convert(job, "onnx-fp32", output_dir=tmp_path / "a", check_speed=False)
    (int8,) = edgekit.convert(job, "onnx-int8", output_dir=tmp_path / "b", check_speed=False)
    assert len(opened) == 1
    assert fp32.passed and int8.passed, (fp32.report["failures"], int8.report["failures"])
    assert not [key for key in job.source.cache if key.startswith("onnx_export")]
    assert fp32.report["calibration"] == int8.report["calibration"]  # the same split judged both
    assert fp32.report["validation"]["samples"] == int8.report["validation"]["samples"] == 20

    # and each artifact is the module: outputs against torch's own on inputs no step has seen
    held = np.random.default_rng(9).normal(size=(8, 16)).astype(np.float32)
    expected = module(torch.from_numpy(held)).detach().numpy()
    for result, tolerance in ((fp32, 1e-5), (int8, 0.1)):
        with edgekit.load(result.artifact) as runtime:
            got = np.concatenate([runtime.run({"input": held[i : i + 1]})["scores"] for i in range(8)])
        assert np.abs(got - expected).max() <= tolerance * max(1.0, np.abs(expected).max()), result.target


@pytest.mark.onnxruntime
def test_a_job_with_preparation_keywords_beside_it_is_refused(onnx_fp32, tmp_path):
    job = edgekit.prepare(onnx_fp32)
    assert job.dataset is None
    with pytest.raises(TypeError, match=r"\['seed'\].*prepare\(\)"):
        edgekit.convert(job, "onnx-fp32", output_dir=tmp_path, seed=3)
    with pytest.raises(edgekit.ConversionError, match="onnx-int8 need.*calibration data"):
        edgekit.convert(job, "onnx-int8", output_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.onnxruntime
def test_a_ranking_needs_a_job_with_data(onnx_fp32, tmp_path):
    from edgekit.pipeline.conversion import sensitivity_ranking

    with pytest.raises(edgekit.ConversionError, match="needs calibration data"):
        sensitivity_ranking(edgekit.prepare(onnx_fp32), "onnx-int8", work_dir=tmp_path)


def test_optimize_still_takes_val_size_with_a_deprecation_warning(onnx_fp32, tmp_path):
    with pytest.warns(DeprecationWarning, match="validation_size"), \
            pytest.raises(edgekit.EdgekitError, match="formats bogus"):
        edgekit.optimize(onnx_fp32, calibration="random", output_dir=tmp_path, formats=("bogus",), val_size=10)
    with pytest.raises(TypeError, match=r"\['calib_sizes'\]"):
        edgekit.optimize(onnx_fp32, calibration="random", output_dir=tmp_path, calib_sizes=10)


def test_prepare_keywords_are_prepare_s_parameters():
    """convert() and optimize() sort keywords by this list: it must be exactly prepare()'s."""
    import inspect

    parameters = list(inspect.signature(edgekit.prepare).parameters)
    assert parameters[0] == "model" and tuple(parameters[1:]) == job_module.PREPARE_KEYWORDS
    from edgekit.converters import TARGETS

    converter_options = {name for target in TARGETS.values() for name in target.options()}
    assert not converter_options & set(job_module.PREPARE_KEYWORDS)


@pytest.mark.onnxruntime
def test_optimize_refuses_a_dequantized_job_before_any_work(onnx_fp32, tmp_path):
    """Workers prepare the job again from the study's settings, which do not carry dequantize: refused."""
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).normal(size=(20, 16)).astype(np.float32))
    (qdq,) = edgekit.convert(onnx_fp32, "onnx-int8", calibration=str(tmp_path / "calib.npy"),
                             output_dir=tmp_path / "qdq", check_speed=False)
    job = edgekit.prepare(qdq.artifact, calibration=str(tmp_path / "calib.npy"), dequantize=True)
    with pytest.raises(edgekit.EdgekitError, match="does not take a job prepared with dequantize=True"):
        edgekit.optimize(job, output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
