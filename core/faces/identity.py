"""Who a face is: dlib's 128-D face descriptor and the distance between two.

dlib's ResNet face-recognition model (the ``dlib_face_recognition_resnet_model_v1.dat`` that
``face-recognition-models`` installs; 99.38 % on LFW) maps a face to 128 numbers. By its authors'
convention two faces closer than 0.6 are the same person, and different people are usually 0.7-0.9
apart. PSNR says how many pixels match; this says whether a person would still be recognised.

Inputs are FFHQ-aligned crops of any size (the app's aligned photos, a model's reconstructions and
children). Small ones are enlarged to ``SIDE`` pixels first, and the 68 landmarks are fitted inside the
box where an aligned face lies, not searched for: HOG misses many blurry 64 px reconstructions, and
describing the photo and its reconstruction the same way is what makes their distance fair.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from core.faces.detect import predictor_path

RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"
SAME_PERSON = 0.6  # dlib's threshold: below it, two faces read as one person
SIDE = 256  # px the face is described at (the model looks at a 150 px chip cut from it)
# Where a face lies in an FFHQ-aligned crop, as fractions of the side: the mean HOG detection box on 20
# aligned London faces (left, top, right, bottom; std under 0.035 of the side).
ALIGNED_BOX = (0.21, 0.31, 0.79, 0.89)


def recognition_path() -> Path:
    """Where ``face-recognition-models`` put dlib's face-recognition ResNet."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("Identity needs the package 'face-recognition-models' (pip install face-recognition-models).")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / RECOGNITION_FILE
    if not path.is_file():
        raise RuntimeError(f"The face-recognition model {path} is missing; reinstall 'face-recognition-models'.")
    return path


class FaceIdentity:
    """Descriptors of aligned faces. Thread-safe (dlib calls are serialised); load once, reuse."""

    def __init__(self) -> None:
        import dlib  # deferred: dlib is optional and slow to load

        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(predictor_path()))
        self._model = dlib.face_recognition_model_v1(str(recognition_path()))
        self._lock = threading.Lock()

    def descriptors(self, faces: Sequence[Image.Image | np.ndarray]) -> np.ndarray:
        """(N, 128) descriptors of FFHQ-aligned faces (PIL images or uint8 arrays, grey or RGB, any size)."""
        out = np.empty((len(faces), 128), dtype=np.float64)
        for i, face in enumerate(faces):
            rgb = np.asarray(_prepared(face))
            left, top, right, bottom = (int(round(f * SIDE)) for f in ALIGNED_BOX)
            with self._lock:
                shape = self._predictor(rgb, self._dlib.rectangle(left, top, right, bottom))
                out[i] = np.asarray(self._model.compute_face_descriptor(rgb, shape))
        return out

    def distance(self, a: Image.Image | np.ndarray, b: Image.Image | np.ndarray) -> float:
        """Descriptor distance between two aligned faces."""
        da, db = self.descriptors([a, b])
        return float(np.linalg.norm(da - db))


def _prepared(face: Image.Image | np.ndarray) -> Image.Image:
    img = face if isinstance(face, Image.Image) else Image.fromarray(np.asarray(face, dtype=np.uint8))
    img = img.convert("RGB")
    return img if img.size == (SIDE, SIDE) else img.resize((SIDE, SIDE), Image.BICUBIC)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise distances between descriptor sets (N, 128) and (M, 128) -> (N, M)."""
    return np.linalg.norm(np.asarray(a)[:, None, :] - np.asarray(b)[None, :, :], axis=-1)


def verdict(distance: float) -> str:
    """The plain sentence the UI and CLI show beside a distance."""
    if distance < SAME_PERSON:
        return f"identity distance {distance:.2f} — below {SAME_PERSON} reads as the same person"
    return f"identity distance {distance:.2f} — {SAME_PERSON} or more reads as a different person"


_default: FaceIdentity | None = None
_default_lock = threading.Lock()


def default_identity() -> FaceIdentity:
    """A shared model (loading both dlib files takes ~1 s)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = FaceIdentity()
        return _default
