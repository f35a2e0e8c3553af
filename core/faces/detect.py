"""Offline face detection and 68-point landmarks with dlib.

dlib's HOG detector and its 68-point shape predictor are the models the FFHQ
dataset itself was aligned with. The predictor weights ship inside the PyPI
package ``face-recognition-models`` (no download at run time); its licence
excludes commercial use, which the model cards say.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.faces.align import FivePoints

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
LANDMARK_LICENCE = (
    "dlib 68-point landmark model (iBUG 300-W training data): research use only, no commercial use"
)


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # left, top, right, bottom in pixels of the input image
    landmarks: np.ndarray  # (68, 2) x/y pixels

    @property
    def points(self) -> FivePoints:
        return FivePoints.from_68(self.landmarks)

    @property
    def area(self) -> int:
        return max(0, self.box[2] - self.box[0]) * max(0, self.box[3] - self.box[1])


def predictor_path() -> Path:
    """Where ``face-recognition-models`` put the 68-point model (found without importing it:
    its ``__init__`` needs ``pkg_resources``, which new setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "Face landmarks need the package 'face-recognition-models' (pip install face-recognition-models)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / PREDICTOR_FILE
    if not path.is_file():
        raise RuntimeError(f"The landmark model {path} is missing; reinstall 'face-recognition-models'.")
    return path


class FaceDetector:
    """dlib HOG detector + 68-point predictor.

    Large photos are searched at ``max_side`` pixels (faster, and the HOG
    window then sees whole faces); landmarks are fitted on the full image.
    """

    def __init__(self, max_side: int = 1024, upsample: int = 1) -> None:
        try:
            import dlib
        except ImportError as e:  # pragma: no cover - install problem
            raise RuntimeError("Face detection needs the package 'dlib-bin' (pip install dlib-bin).") from e
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(predictor_path()))
        self.max_side = max_side
        self.upsample = upsample
        self._lock = threading.Lock()  # dlib objects are not documented as thread-safe

    def detect(self, image: Image.Image) -> list[Face]:
        """All faces, largest first."""
        rgb = np.asarray(image.convert("RGB"))
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = rgb if scale == 1.0 else np.asarray(image.convert("RGB").resize((round(w * scale), round(h * scale)), Image.BILINEAR))
        # Small photos get one more upsampling so faces of ~40 px are still found.
        upsample = self.upsample + (1 if max(small.shape[:2]) < 512 else 0)
        faces = []
        with self._lock:
            rects = self._detector(small, upsample)
            for r in rects:
                box = (int(r.left() / scale), int(r.top() / scale), int(r.right() / scale), int(r.bottom() / scale))
                rect = self._dlib.rectangle(*box)
                shape = self._predictor(rgb, rect)
                lm = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
                faces.append(Face(box, lm))
        return sorted(faces, key=lambda f: f.area, reverse=True)


_default: FaceDetector | None = None
_default_lock = threading.Lock()


def default_detector() -> FaceDetector:
    """A shared detector (loading the predictor takes ~1 s)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = FaceDetector()
        return _default
