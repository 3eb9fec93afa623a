"""Real task inputs made offline, for the third-party models in wheels.py: rendered text for OCR,
rendered pages for layout and orientation, synthetic voiced audio for the voice activity detector.

Each function returns float32 arrays preprocessed as the model's own pipeline does (PaddleOCR's and
RapidOCR's normalisation, Silero's 16 kHz chunks), with a leading sample axis.
"""

from __future__ import annotations

import string

import numpy as np

ALPHABET = string.digits + string.ascii_letters
# what a reader can tell apart in any font: no 0/O/o, 1/I/l, 5/S, x/X, c/C ... (task metrics use these)
UNAMBIGUOUS = "ABDEFGHJKLMNQRTY2346789abdefghmnqrt"


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _text(rng: np.random.Generator, low: int = 4, high: int = 12, alphabet: str = ALPHABET) -> str:
    return "".join(rng.choice(list(alphabet), int(rng.integers(low, high))))


def render_line(text: str, height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """A line of dark text on a light, slightly noisy background: HxWx3 uint8."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(200, 256, 3)))
    ImageDraw.Draw(image).text((4, height // 2), text, fill=tuple(int(v) for v in rng.integers(0, 60, 3)),
                               font=_font(int(height * 0.7)), anchor="lm")
    array = np.asarray(image, dtype=np.float32) + rng.normal(0, 4, (height, width, 3))
    return np.clip(array, 0, 255).astype(np.uint8)


def render_page(height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """A document page: a title, paragraphs of text lines, a boxed figure. HxWx3 uint8."""
    return render_page_with_lines(height, width, seed=seed)[0]


def render_page_with_lines(height: int, width: int, *, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """``render_page``'s page and the box (x0, y0, x1, y1) of every text line drawn on it: a text detector's
    ground truth."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), (250, 250, 248))
    draw = ImageDraw.Draw(image)
    boxes = []

    def text(position: tuple[int, int], words: str, size: int, fill: tuple[int, int, int]) -> None:
        draw.text(position, words, fill=fill, font=_font(size))
        boxes.append(tuple(int(v) for v in draw.textbbox(position, words, font=_font(size))))

    y = int(height * 0.05)
    text((width // 6, y), _text(rng, 6, 14).upper(), max(8, height // 22), (10, 10, 10))
    y += height // 12
    line = max(6, height // 45)
    while y < height * 0.9:
        if rng.random() < 0.15:  # a figure
            box_h = int(height * rng.uniform(0.1, 0.25))
            draw.rectangle((width // 8, y, width * 7 // 8, min(y + box_h, height - 5)), outline=(30, 30, 30), width=2)
            y += box_h + line
            continue
        for _ in range(int(rng.integers(2, 6))):
            text((width // 10, y), " ".join(_text(rng, 2, 9) for _ in range(int(rng.integers(3, 9)))), line,
                 (20, 20, 20))
            y += int(line * 1.5)
        y += line
    return np.asarray(image, dtype=np.uint8), [b for b in boxes if b[1] < height and b[3] > b[1]]


def text_boxes(probability: np.ndarray, threshold: float = 0.3) -> list[tuple[float, ...]]:
    """A DB text detector's boxes, as PaddleOCR post-processes them in the simplest form: connected regions of
    the probability map above ``threshold``, each region's bounding box (x0, y0, x1, y1) grown back by the
    unclip offset."""
    from scipy import ndimage

    regions, _ = ndimage.label(probability > threshold)
    boxes = []
    for found in ndimage.find_objects(regions):
        x0, y0, x1, y1 = found[1].start, found[0].start, found[1].stop, found[0].stop
        # DB predicts shrunk text kernels; PaddleOCR grows them back ("unclip", ratio 1.5): offset = A r / L
        grow = (x1 - x0) * (y1 - y0) * 1.5 / (2 * ((x1 - x0) + (y1 - y0)))
        boxes.append((x0 - grow, y0 - grow, x1 + grow, y1 + grow))
    return boxes


def detection_f1(found: list[tuple[int, ...]], truth: list[tuple[int, ...]], iou: float = 0.5) -> float:
    """F1 of greedy one-to-one matches at IoU >= ``iou`` (the detection benchmarks' h-mean)."""
    def overlap(a: tuple[int, ...], b: tuple[int, ...]) -> float:
        w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
        inter = max(w, 0) * max(h, 0)
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union else 0.0

    unmatched, hits = list(truth), 0
    for box in found:
        best = max(unmatched, key=lambda t: overlap(box, t), default=None)
        if best is not None and overlap(box, best) >= iou:
            unmatched.remove(best)
            hits += 1
    return 2 * hits / (len(found) + len(truth)) if found or truth else 1.0


def _nchw(images: list[np.ndarray], mean: float | tuple, std: float | tuple) -> np.ndarray:
    batch = np.stack(images).astype(np.float32) / 255.0
    batch = (batch - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def ocr_lines(count: int, *, height: int = 48, width: int = 320, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Text-line crops normalised as PaddleOCR does ((x/255 - 0.5) / 0.5), and the strings rendered."""
    rng = np.random.default_rng(seed)
    texts = [_text(rng, alphabet=UNAMBIGUOUS) for _ in range(count)]
    images = [render_line(t, height, width, seed=seed * 10_000 + i) for i, t in enumerate(texts)]
    return _nchw(images, 0.5, 0.5), texts


def ocr_lines_upside_down(count: int, *, height: int = 48, width: int = 192,
                          seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Text lines, half of them rotated by 180 degrees: the direction classifier's task (label 1 = rotated)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(count):
        line = render_line(_text(rng, 3, 8), height, width, seed=seed * 10_000 + i)
        flipped = bool(rng.random() < 0.5)
        images.append(line[::-1, ::-1] if flipped else line)
        labels.append(int(flipped))
    return _nchw(images, 0.5, 0.5), labels


def pages(count: int, height: int, width: int, *, seed: int = 0, imagenet: bool = True) -> np.ndarray:
    images = [render_page(height, width, seed=seed * 10_000 + i) for i in range(count)]
    return pages_from(images) if imagenet else _nchw(images, 0.0, 1.0)


def pages_from(images: list[np.ndarray]) -> np.ndarray:
    """Rendered pages normalised as ImageNet-trained models (PaddleOCR's detector among them) take them."""
    return _nchw(images, *IMAGENET)


def voiced_audio(count: int, *, samples: int = 512, rate: int = 16_000, seed: int = 0) -> dict[str, np.ndarray]:
    """Chunks of a voiced, speech-like signal (a glottal pulse train through formant resonances) or of
    quiet noise, with Silero's recurrent state (zeros) and sample rate, one sample per row."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / rate
    chunks = []
    for _ in range(count):
        if rng.random() < 0.6:
            pitch = rng.uniform(90, 250)
            signal = sum(np.sin(2 * np.pi * pitch * k * t) / k * np.exp(-((pitch * k - f) / 300) ** 2)
                         for k in range(1, 30) for f in (rng.uniform(300, 900), rng.uniform(900, 2500)))
            signal = 0.3 * signal / (np.abs(signal).max() + 1e-6)
        else:
            signal = np.zeros(samples)
        chunks.append((signal + rng.normal(0, 0.005, samples)).astype(np.float32))
    return {"input": np.stack(chunks)[:, None, :], "state": np.zeros((count, 2, 1, 128), np.float32),
            "sr": np.full((count,), 16_000, np.int64)}


def ocr_charset(model_path) -> list[str]:
    """PP-OCR recognizers carry their character list in the ONNX metadata ('character'); CTC index 0 is
    the blank and the last index a space."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    characters = next(p.value for p in model.metadata_props if p.key == "character").splitlines()
    return ["<blank>", *characters, " "]


def ctc_decode(probabilities: np.ndarray, charset: list[str]) -> str:
    """Greedy CTC: best class per timestep, repeats merged, blanks dropped. ``probabilities``: [1, T, C]."""
    best = probabilities.reshape(-1, probabilities.shape[-1]).argmax(1)
    text, previous = [], 0
    for index in best:
        if index != previous and index != 0:
            text.append(charset[index])
        previous = index
    return "".join(text).strip()
