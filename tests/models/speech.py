"""Spoken task data made offline for the openWakeWord models of wheels.py: phrases synthesized by espeak-ng
(Debian's package; .ci/run installs it) in several voices and speeds, and openWakeWord's own pipeline around
the speech-embedding CNN under test — 16 kHz audio -> mel frames (its float melspectrogram.tflite, scaled as
openWakeWord does) -> 76-frame windows every 8 frames -> embeddings -> each wake phrase's head over 16
consecutive embeddings. A clip's decision is the phrase whose head fires highest above 0.5, else none.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import wheels

RATE = 16_000
WINDOW, STEP, HEAD_WINDOWS = 76, 8, 16  # mel frames per embedding, frames between embeddings, embeddings per head
THRESHOLD = 0.5  # openWakeWord's default
#: the wake phrases whose heads espeak-ng's voices trigger (hey_mycroft's does not: left out)
PHRASES = {"hey_jarvis": "hey jarvis", "alexa": "alexa", "okay_nabu": "okay nabu"}
NONE = "none"
VOICES = ("en-us", "en", "en-us+m3", "en-us+f2", "en+m7", "en-us+f4", "en+f3", "en-us+m1")
_OTHER_WORDS = ("the quick brown fox jumps over a lazy dog turn on the lights what time is it play some music stop "
                "the weather today tomorrow kitchen open the door call mom set a timer for ten minutes").split()


def available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: str, words_per_minute: int) -> np.ndarray:
    """espeak-ng's rendition of ``text`` at 16 kHz, int16-scaled float32 (what openWakeWord is fed)."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "--stdout", text],
                         capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as handle:
        rate = handle.getframerate()
        audio = np.frombuffer(handle.readframes(handle.getnframes()), np.int16).astype(np.float64)
    times = np.arange(0, len(audio) / rate, 1 / RATE)
    return np.interp(times, np.arange(len(audio)) / rate, audio).astype(np.float32)


@dataclass(frozen=True)
class Clip:
    label: str  # a PHRASES key or NONE
    audio: np.ndarray


def clips(voices: Sequence[str], speeds: Sequence[int], *, seed: int) -> list[Clip]:
    """Every phrase and one other sentence per voice and speed, with a second of silence before (the heads
    expect a quiet start) and half a second after, 2.2 s at least (a head sees 16 embeddings: 2 s of audio)."""
    rng = np.random.default_rng(seed)
    found = []
    for voice in voices:
        for speed in speeds:
            other = " ".join(rng.choice(_OTHER_WORDS, 4))
            for label, text in (*PHRASES.items(), (NONE, other)):
                spoken = np.concatenate([np.zeros(RATE), speak(text, voice, speed)])
                audio = np.concatenate([spoken, np.zeros(max(RATE // 2, RATE * 22 // 10 - len(spoken)))])
                found.append(Clip(label, audio.astype(np.float32)))
    return found


class WakeWord:
    """openWakeWord's float front end and heads (LiteRT), around an embedding model given per call."""

    def __init__(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._mel = Interpreter(model_path=str(wheels.fetch("oww_melspectrogram")))
        self._heads = {}
        for key in PHRASES:
            head = Interpreter(model_path=str(wheels.fetch(f"oww_{key}")))
            head.allocate_tensors()
            self._heads[key] = head

    def windows(self, clip: Clip) -> np.ndarray:
        """The embedding model's inputs for a clip: [windows, 76, 32, 1]."""
        self._mel.resize_tensor_input(0, [1, len(clip.audio)])
        self._mel.allocate_tensors()
        self._mel.set_tensor(self._mel.get_input_details()[0]["index"], clip.audio[None])
        self._mel.invoke()
        mel = self._mel.get_tensor(self._mel.get_output_details()[0]["index"]).reshape(-1, 32) / 10 + 2
        starts = range(0, len(mel) - WINDOW + 1, STEP)
        return np.stack([mel[s : s + WINDOW] for s in starts])[..., None].astype(np.float32)

    def decide(self, embeddings: np.ndarray) -> str:
        """One clip's decision from its embeddings in order ([windows, ..., 96])."""
        embeddings = embeddings.reshape(len(embeddings), -1)
        best = {}
        for key, head in self._heads.items():
            inputs, output = head.get_input_details()[0]["index"], head.get_output_details()[0]["index"]
            scores = []
            for start in range(len(embeddings) - HEAD_WINDOWS + 1):
                head.set_tensor(inputs, embeddings[None, start : start + HEAD_WINDOWS])
                head.invoke()
                scores.append(float(head.get_tensor(output).ravel()[0]))
            best[key] = max(scores)
        key = max(best, key=best.get)
        return key if best[key] > THRESHOLD else NONE

    def decider(self, clips: Sequence[Clip]) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        """edgekit's ``decide``: the embedding model's outputs for these clips' windows, in order -> one
        decision per clip."""
        counts = [len(self.windows(c)) for c in clips]

        def decide(outputs: dict[str, np.ndarray]) -> np.ndarray:
            (embeddings,) = outputs.values()
            bounds = np.cumsum([0, *counts])
            return np.array([self.decide(embeddings[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])

        return decide

    def accuracy(self, clips: Sequence[Clip], embed: Callable[[np.ndarray], np.ndarray]) -> float:
        """Percent of clips decided right, with ``embed`` (one window [1, 76, 32, 1] -> its embedding)."""
        right = [self.decide(np.stack([embed(w[None]) for w in self.windows(c)])) == c.label for c in clips]
        return 100 * float(np.mean(right))
