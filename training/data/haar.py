"""A real face detector as a yardstick for the procedural faces (OpenCV's Haar cascade).

opencv-python-headless 4.x ships the cascade files (5.x ships none), hence the pin in the
`dev` extra. The protocol is fixed so figures stay comparable across renderer changes.
"""

from __future__ import annotations

import numpy as np


class HaarProbe:
    def __init__(self) -> None:
        import cv2  # optional dependency: only the tests and benchmarks need it

        self._cv2 = cv2
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"could not load the Haar cascade from {path}")

    def boxes(self, rgb: np.ndarray) -> np.ndarray:
        """Detected face boxes (x, y, w, h) on the 2×-upscaled grey image."""
        cv2 = self._cv2
        h, w = rgb.shape[:2]
        big = cv2.resize(rgb, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)
        grey = cv2.cvtColor(big, cv2.COLOR_RGB2GRAY)
        found = self._cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=4, minSize=(24, 24))
        return np.asarray(found).reshape(-1, 4)

    def exactly_one(self, rgb: np.ndarray) -> bool:
        return len(self.boxes(rgb)) == 1
