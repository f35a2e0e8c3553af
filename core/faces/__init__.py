"""Find a face in a photo and align it the way FFHQ was aligned.

Transform size: FFHQ resamples its crop square at 4096 px and then shrinks it
to the output. ``align_face`` resamples at ``min(4096, max(4 * output, 1024))``
instead: FFHQ's own shrink step first reduces the photo so the square is at
most ~4x the output, so a 4x supersampled transform already sees every source
pixel. Measured on London (bench/alignment.py, 10 faces): against the 4096 px
result, 62.5 dB PSNR at 64 px output and 57.4 dB at 256 px (under one grey
level), 14x faster (0.05 vs 0.69 s); at 1024 px output the rule gives 4096,
i.e. exactly FFHQ (2048 would give 56 dB at 4.6x the speed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from core.faces.align import FivePoints, align_ffhq, ffhq_quad, to_aligned
from core.faces.detect import LANDMARK_LICENCE, Face, FaceDetector, default_detector
from core.faces.mask import face_mask

# Below this eye-to-eye distance (pixels in the photo) the aligned crop is
# upsampled so much that it turns blurry.
SMALL_FACE_EYE_DISTANCE = 30.0
# Below this HOG score the "face" may be something else (see detect.py).
UNSURE_SCORE = 0.5
MAX_OUTPUT_SIZE = 4096


class NoFaceError(ValueError):
    """The photo has no detectable face."""


@dataclass
class AlignedFace:
    image: Image.Image  # RGB, output_size x output_size
    face: Face  # the face used, in the photo's pixels
    faces_found: int
    warnings: list[str] = field(default_factory=list)
    quad: np.ndarray | None = None  # (4, 2) corners of the FFHQ crop square in the photo (top-left, bottom-left, ...)

    def landmarks(self, size: int | None = None) -> np.ndarray:
        """The face's 68 landmarks (68, 2) in the pixels of the aligned crop at ``size`` (default: this crop's side)."""
        if self.quad is None:
            raise ValueError("This aligned face has no crop square (quad), so its landmarks cannot be placed in the crop.")
        return to_aligned(self.face.landmarks, self.quad, int(size or self.image.size[0]))

    def mask(self, size: int | None = None) -> np.ndarray:
        """Soft face-region weights (size, size) in [0, 1] for this crop at ``size`` (e.g. the model's image size).

        1 on the face (jaw, brows, forehead), 0 on background, hair beyond the face and clothes:
        pass it to ``core.projection.project(weights=...)`` so only the face drives the fit.
        """
        size = int(size or self.image.size[0])
        return face_mask(self.landmarks(size), size)


def several_faces_note(faces: list[Face], which: int) -> str:
    """Which of several faces was used; "the largest" only when it is clearly larger than the next one."""
    numbered = f"face {which + 1} of {len(faces)}"
    if which == 0 and faces[0].side > 1.1 * faces[1].side:
        return f"{len(faces)} faces were found; the largest one was used (pick another to change it)."
    if which == 0:
        return f"{len(faces)} faces of about the same size were found; {numbered} was used: check it is the right person."
    return f"{len(faces)} faces were found; {numbered} was used, as chosen."


def transform_size_for(output_size: int) -> int:
    """The supersampling size ``align_face`` uses (see the module docstring)."""
    return min(MAX_OUTPUT_SIZE, max(4 * output_size, 1024, output_size))


@dataclass
class FoundFaces:
    """Every face found in a photo, largest first, and whether only the slower CNN detector found them."""

    faces: list[Face]
    slow: bool = False


def find_faces(image: Image.Image, detector: FaceDetector | None = None) -> FoundFaces:
    """The faces in ``image`` (HOG, then the CNN detector if HOG finds none); :class:`NoFaceError` if none."""
    detector = detector or default_detector()
    faces, slow = detector.detect(image), False
    if not faces:
        faces, slow = detector.detect_cnn(image), True
    if not faces:
        raise NoFaceError(
            "No face was found in this photo. Use a clear, front-facing photo where the face is well lit and not cut off."
        )
    return FoundFaces(faces, slow)


def align_face(
    image: Image.Image,
    output_size: int,
    detector: FaceDetector | None = None,
    transform_size: int | None = None,
    which: int = 0,
    found: FoundFaces | None = None,
) -> AlignedFace:
    """Detect the faces in ``image`` and return the FFHQ-aligned crop of face ``which`` (0: the largest).

    Raises :class:`NoFaceError` when no face is found (never returns a crop of
    the background). Several faces, a small face, a turned photo or an unsure
    detection add a warning (a plain sentence for the user). ``found``: the
    result of :func:`find_faces` on this photo, to choose another face without detecting again.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"align_face needs a PIL image, got {type(image).__name__}.")
    if not 1 <= int(output_size) <= MAX_OUTPUT_SIZE:
        raise ValueError(f"The aligned size must be between 1 and {MAX_OUTPUT_SIZE} pixels, got {output_size}.")
    output_size = int(output_size)
    found = found or find_faces(image, detector)
    faces, slow = found.faces, found.slow
    if isinstance(which, bool) or not 0 <= int(which) < len(faces) or int(which) != which:
        raise ValueError(f"Choose a face number between 0 and {len(faces) - 1}; got {which}." if len(faces) > 1
                         else f"Only one face was found in this photo; the face number must be 0, got {which}.")
    face = faces[int(which)]
    warnings = []
    if len(faces) > 1:
        warnings.append(several_faces_note(faces, int(which)))
    eyes = face.points.inter_ocular
    if eyes < SMALL_FACE_EYE_DISTANCE:
        warnings.append(
            f"The face is small ({eyes:.0f} px between the eyes); the aligned crop will be blurry. "
            "A closer photo gives a better result."
        )
    if face.angle % 360:
        warnings.append(f"The face was found after turning the photo by {face.angle:g} degrees.")
    if slow:
        warnings.append("The face was only found by the slower, more thorough detector; check that the crop really shows it.")
    elif face.score < UNSURE_SCORE:
        warnings.append("The face was hard to detect; check that the aligned crop really shows it.")
    ts = transform_size or transform_size_for(output_size)
    crop = align_ffhq(image, face.points, output_size=output_size, transform_size=ts)
    return AlignedFace(crop, face, len(faces), warnings, ffhq_quad(face.points)[0])


__all__ = [
    "LANDMARK_LICENCE",
    "AlignedFace",
    "Face",
    "FaceDetector",
    "FivePoints",
    "FoundFaces",
    "NoFaceError",
    "align_face",
    "align_ffhq",
    "default_detector",
    "find_faces",
    "ffhq_quad",
    "to_aligned",
    "transform_size_for",
]
