"""A trained keyword spotter nobody here wrote: openWakeWord's speech-embedding CNN (a float .tflite from the
pyopen-wakeword wheel) quantized to int8, judged by the task it serves — which wake phrase a spoken clip holds
(espeak-ng voices, made offline; tests/models/speech.py).

The embedding has no decision of its own: its outputs look fine to cosine and SQNR (0.987 / 16 dB for
openvino-int8) while the phrases decided downstream change. The application's decision is given to edgekit
as ``decide``, with a 2-point budget; each int8 form must then read the held-out voices within 2 points of
float, or say failed and why.
"""

from __future__ import annotations

import pytest
import speech
import wheels

import edgekit

pytestmark = [pytest.mark.slow, pytest.mark.litert, pytest.mark.openvino,
              pytest.mark.skipif(not speech.available(), reason="espeak-ng is not installed (apt-get install "
                                 "espeak-ng; .ci/run does)")]

BUDGET = 2.0  # points of task accuracy; as edgekit's --max-drop with --decide: % of decisions changed


@pytest.fixture(scope="module")
def spoken():
    """Calibration, validation (steers the repair) and test clips, each in voices or speeds of its own."""
    return (speech.WakeWord(), speech.clips(speech.VOICES[:4], (140,), seed=1),
            speech.clips(speech.VOICES[:4], (115, 170), seed=2),
            speech.clips(speech.VOICES[4:], (120, 135, 150, 170), seed=3))


def _embedder(path, **options):
    runtime = edgekit.load(path, **options)
    (name,) = (spec.name for spec in runtime.inputs)
    return runtime, lambda window: next(iter(runtime.run({name: window}).values()))


@pytest.mark.parametrize("target", ["tflite-int8", "openvino-int8"])
def test_int8_wake_word_spotter_within_two_points_of_float_or_fails_saying_why(tmp_path, spoken, target):
    wake, calibration, validation, test = spoken
    calib_windows = [w for clip in calibration for w in wake.windows(clip)[::2]]
    val_windows = [w for clip in validation for w in wake.windows(clip)]
    # an iterable keeps its order: the first calib_size samples calibrate, the rest validate in clip order
    (result,) = edgekit.convert(wheels.fetch("oww_embedding"), target, calibration=calib_windows + val_windows,
                                calib_size=len(calib_windows), validation_size=len(val_windows),
                                decide=wake.decider(validation), max_drop=BUDGET, output_dir=tmp_path)
    report = result.report
    decisions = report["validation"]["decisions"]
    assert decisions["count"] == len(validation) and decisions["by"].startswith("decide()")
    assert report["validation"]["drop_basis"].startswith("decisions changed")
    accuracy = {}
    for form, path in (("float", wheels.fetch("oww_embedding")), ("int8", result.artifact)):
        runtime, embed = _embedder(path)
        with runtime:
            accuracy[form] = wake.accuracy(test, embed)
    repair = report["repair"]
    print(f"{target}: float {accuracy['float']:.1f} %, int8 {accuracy['int8']:.1f} % on {len(test)} held-out clips; "
          f"validation decisions kept {decisions['agreement']:.1%}; status {report['status']}; attempts "
          f"{repair and [(a['remedy'], a.get('drop'), a.get('latency_ms')) for a in repair['attempts']]}")
    assert accuracy["float"] >= 70, "the float spotter should hear espeak-ng's phrases: the task data is not speech"
    if accuracy["float"] - accuracy["int8"] > BUDGET:
        assert report["status"] == "failed" and report["failures"], (accuracy, report["failures"])
