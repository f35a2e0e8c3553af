"""Offline face detection and 68-point landmarks with dlib.

dlib's HOG detector and its 68-point shape predictor are the models the FFHQ
dataset itself was aligned with. The predictor weights ship inside the PyPI
package ``face-recognition-models`` (no download at run time); its licence
excludes commercial use, which the model cards say.

Speed: HOG runs on a copy resized to about ``detect_side``² pixels (its cost
grows with the pixel count, and faces worth aligning are large enough there); the
landmarks are fitted on the full-resolution photo, on a patch around the face.
Robustness: HOG only finds roughly upright faces, so when the upright photo shows
no clear face, turned copies are searched (a sideways or upside-down photo, a
strongly tilted selfie) and the clearest orientation wins; a tilted head gets a
second landmark fit on a levelled copy. Landmarks are always mapped back to the
photo's own pixels.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.faces import geometry as g
from core.faces.align import FivePoints

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
CNN_FILE = "mmod_human_face_detector.dat"
CNN_SIDE = 640  # px: the CNN detector is slow (~1-3 s at this size on 2 CPU cores), so it searches a smaller copy
LANDMARK_LICENCE = (
    "dlib 68-point landmark model (iBUG 300-W training data): research use only, no commercial use"
)
# Turns tried when the upright photo shows no clear face: 90/270/180 undo a photo whose
# orientation was lost; +-30 (only if still nothing) catch heads tilted beyond HOG's ~25 degrees.
DEFAULT_TURNS = (90.0, 270.0, 180.0)
DEFAULT_TILTS = (30.0, -30.0)
# HOG scores measured on the London set, selfies and test photos (bench/alignment.py): clear
# upright faces score 1.0-3.0; upside-down or sideways faces that HOG still "finds" score
# below 0.4; dark-skinned faces in a dim group photo 0.1-0.7; false alarms on a badge 0.06-0.13.
SURE_SCORE = 1.0  # an upright face this clear ends the search
TURN_MARGIN = 0.5  # a turned copy wins only if its best face scores this much higher
RELATIVE_SCORE = 1.0  # faces scoring this much below the best one are treated as false alarms
ROLL_REFIT = 10.0  # degrees of head roll beyond which landmarks are fitted again on a levelled copy
LANDMARK_MAX_SIDE = 800.0  # px: larger faces are fitted on a reduced patch (London faces are ~500 px)


@dataclass(frozen=True)
class Face:
    """One detected face, in the pixels of the photo that was passed in."""

    box: tuple[int, int, int, int]  # left, top, right, bottom (axis-aligned hull of the detection square)
    landmarks: np.ndarray  # (68, 2) x/y pixels, iBUG 68-point order
    score: float = 0.0  # HOG SVM margin; dlib's own threshold is 0
    angle: float = 0.0  # degrees the photo was turned (counter-clockwise) for the face to be found
    size: float = 0.0  # side of the detection square in photo pixels (0: use the box)

    @property
    def points(self) -> FivePoints:
        return FivePoints.from_68(self.landmarks)

    @property
    def area(self) -> int:
        return max(0, self.box[2] - self.box[0]) * max(0, self.box[3] - self.box[1])

    @property
    def side(self) -> float:
        return self.size or float(np.sqrt(self.area))


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

    ``detect_side``: HOG searches a copy of about ``detect_side``² pixels (its
    cost grows with the pixel count; a panorama keeps the same budget as a
    square photo). Small photos are enlarged at most ``max_upscale`` times.
    HOG's window is 80 px, so in a square photo it finds faces down to
    ``80 / detect_side`` of the side (``upsample`` halves that, at 4x the time).
    ``min_score`` is the HOG threshold (0 = dlib's default). The defaults were
    chosen on evidence (bench/alignment.py). Thread-safe: dlib calls are serialised.
    """

    def __init__(
        self,
        detect_side: int = 800,
        upsample: int = 0,
        min_score: float = 0.0,
        turns: Sequence[float] = DEFAULT_TURNS,
        tilts: Sequence[float] = DEFAULT_TILTS,
        max_upscale: float = 4.0,
        sure_score: float = SURE_SCORE,
        turn_margin: float = TURN_MARGIN,
        relative_score: float = RELATIVE_SCORE,
        roll_refit: float = ROLL_REFIT,
    ) -> None:
        try:
            import dlib  # deferred: dlib is optional and slow to load; detection says plainly when it is missing
        except ImportError as e:  # pragma: no cover - install problem
            raise RuntimeError("Face detection needs the package 'dlib-bin' (pip install dlib-bin).") from e
        if detect_side < 80:
            raise ValueError(f"detect_side must be at least 80 pixels (HOG's window), got {detect_side}.")
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(predictor_path()))
        self.detect_side = int(detect_side)
        self.upsample = int(upsample)
        self.min_score = float(min_score)
        self.turns = tuple(float(a) for a in turns)
        self.tilts = tuple(float(a) for a in tilts)
        self.max_upscale = float(max_upscale)
        self.sure_score, self.turn_margin = float(sure_score), float(turn_margin)
        self.relative_score = float(relative_score)
        self.roll_refit = float(roll_refit)  # 0 disables the second fit
        self._lock = threading.Lock()  # dlib objects are not documented as thread-safe
        self._cnn = None

    def detect(self, image: Image.Image) -> list[Face]:
        """All faces, largest first; ``[]`` when there is none.

        The upright photo is searched first; unless it shows a clear face the
        turned copies are searched too and the orientation with the clearest
        face wins (HOG also fires weakly on upside-down faces, so the first hit
        is not enough). Faces much less clear than the best are dropped as
        false alarms (``relative_score``).
        """
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        if min(rgb.size) < 1:
            raise ValueError("The image is empty (0 pixels wide or high).")
        small = self._detection_copy(rgb)
        faces = self.detect_at(rgb, 0.0, small)
        for group in (self.turns, self.tilts):
            if _best(faces) >= self.sure_score:
                break
            if group is self.tilts and faces:
                break  # tilted copies only when nothing at all was found
            for angle in group:
                turned = self.detect_at(rgb, angle, small)
                if _best(turned) > _best(faces) + (self.turn_margin if faces else 0.0):
                    faces = turned
        if faces:
            floor = _best(faces) - self.relative_score
            faces = [f for f in faces if f.score >= floor]
        return faces

    def detect_cnn(self, image: Image.Image) -> list[Face]:
        """Faces found by dlib's CNN (MMOD) detector, largest first: the fallback when HOG finds none.

        HOG misses faces it would find in better light; measured on the shared
        classroom photo it found 3 faces where the CNN found 16, mostly dark-skinned
        children in dim light. The CNN costs seconds, so it runs only when HOG
        found nothing. Its score is its confidence (about 1 for a clear face).
        """
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        with self._lock:
            if self._cnn is None:
                self._cnn = self._dlib.cnn_face_detection_model_v1(str(predictor_path().parent / CNN_FILE))
        w, h = rgb.size
        small = self._detection_copy(rgb, CNN_SIDE)
        sx, sy = small.width / w, small.height / h
        with self._lock:
            found = self._cnn(np.asarray(small), 0)
        faces = []
        for d in found:
            r = d.rect
            x0, y0, x1, y1 = r.left() / sx, r.top() / sy, (r.right() + 1) / sx, (r.bottom() + 1) / sy
            centre, side = np.array([(x0 + x1) / 2, (y0 + y1) / 2]), float(x1 - x0)
            lm = self.fit_landmarks(rgb, centre, side, 0.0)
            box = (int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1)))
            faces.append(Face(box, lm, float(d.confidence), 0.0, side))
        return sorted(faces, key=lambda f: f.side, reverse=True)

    def _detection_copy(self, rgb: Image.Image, side: float | None = None) -> Image.Image:
        """The photo resized to about ``side``² pixels (default ``detect_side``; no more than ``max_upscale`` times larger)."""
        w, h = rgb.size
        scale = min((side or self.detect_side) / np.sqrt(w * h), self.max_upscale)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        # reducing_gap: a fast box reduction first when shrinking a big photo a lot.
        return rgb if size == rgb.size else rgb.resize(size, Image.BILINEAR, reducing_gap=3.0)

    def detect_at(self, rgb: Image.Image, angle: float = 0.0, small: Image.Image | None = None) -> list[Face]:
        """Faces in ``rgb`` (RGB) turned ``angle`` degrees counter-clockwise, largest first.

        ``small``: the detection copy from an earlier call on the same photo (saves resizing again).
        """
        small = self._detection_copy(rgb) if small is None else small
        to_det = g.scaling(small.width / rgb.width, small.height / rgb.height)  # photo -> detection copy
        if angle % 360:
            rot, size = g.rotation(angle, small.size)
            small = g.warp(small, rot, size)
            to_det = rot @ to_det
        with self._lock:
            rects, scores, _ = self._detector.run(np.asarray(small), self.upsample, self.min_score)
        faces = []
        from_det = np.linalg.inv(to_det)
        for rect, score in zip(rects, scores, strict=True):
            # dlib rectangles are inclusive pixel ranges: corners in continuous coordinates.
            x0, y0, x1, y1 = rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1
            corners = g.apply(from_det, np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float64))
            centre = corners.mean(0)
            side = float(np.hypot(*(corners[1] - corners[0])))
            lm = self.fit_landmarks(rgb, centre, side, angle)
            if self.roll_refit:
                roll = _roll(lm)
                if abs(_wrap(roll - angle)) > self.roll_refit:
                    lm = self.fit_landmarks(rgb, centre, side, roll)
            lo, hi = np.floor(corners.min(0)).astype(int), np.ceil(corners.max(0)).astype(int)
            faces.append(Face((int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])), lm, float(score), float(angle), side))
        return sorted(faces, key=lambda f: f.side, reverse=True)

    def fit_landmarks(self, rgb: Image.Image, centre: np.ndarray, side: float, angle: float = 0.0) -> np.ndarray:
        """The 68 points of the face whose detection square (``centre``, ``side``: photo pixels,
        continuous coordinates) is upright after turning the photo ``angle`` degrees counter-clockwise.

        Fitted at full resolution on a patch twice the face's size (the predictor
        never looks further out); faces over ``LANDMARK_MAX_SIDE`` px are fitted
        on a reduced patch, as more pixels no longer make the points better.
        """
        f = min(1.0, LANDMARK_MAX_SIDE / side)  # patch pixels per photo pixel
        n = int(np.ceil(2 * side * f))
        to_frame = g.rotation(angle, rgb.size)[0] if angle % 360 else np.eye(3)
        c = g.apply(to_frame, np.asarray(centre, dtype=np.float64)[None])[0]
        x0, y0 = np.floor(c - side).astype(int)
        if angle % 360 == 0:
            x0, y0 = max(x0, 0), max(y0, 0)
        to_patch = g.scaling(f, f) @ g.translation(-x0, -y0) @ to_frame
        if angle % 360:
            patch = g.warp(rgb, to_patch, (n, n))
        else:
            x1, y1 = min(x0 + int(np.ceil(2 * side)), rgb.width), min(y0 + int(np.ceil(2 * side)), rgb.height)
            patch = rgb.crop((x0, y0, x1, y1))
            if f < 1:
                size = (max(1, round((x1 - x0) * f)), max(1, round((y1 - y0) * f)))
                patch = patch.resize(size, Image.BILINEAR, reducing_gap=3.0)
                to_patch = g.scaling(size[0] / (x1 - x0), size[1] / (y1 - y0)) @ g.translation(-x0, -y0)
        lo = g.apply(to_patch, np.asarray(centre, dtype=np.float64)[None])[0] - side * f / 2
        box = self._dlib.rectangle(*(int(round(v)) for v in lo), *(int(round(v + side * f)) - 1 for v in lo))
        arr = np.ascontiguousarray(np.asarray(patch))
        with self._lock:
            shape = self._predictor(arr, box)
        lm = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        return g.to_index(g.apply(np.linalg.inv(to_patch), g.from_index(lm)))


def _best(faces: list[Face]) -> float:
    return max((f.score for f in faces), default=-np.inf)


def _roll(lm: np.ndarray) -> float:
    """Clockwise tilt (degrees, as seen on screen) of the line from the image-left eye to the other."""
    d = lm[42:48].mean(0) - lm[36:42].mean(0)
    return float(np.degrees(np.arctan2(d[1], d[0])))


def _wrap(angle: float) -> float:
    return (angle + 180.0) % 360.0 - 180.0


_default: FaceDetector | None = None
_default_lock = threading.Lock()


def default_detector() -> FaceDetector:
    """A shared detector (loading the predictor takes ~1 s)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = FaceDetector()
        return _default
