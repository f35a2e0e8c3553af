"""Find a face in a photo and align it the way FFHQ was aligned."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from core.faces.align import FivePoints, align_ffhq
from core.faces.detect import Face, FaceDetector, default_detector

# Below this eye-to-eye distance (pixels in the photo) the aligned crop is
# upsampled so much that it turns blurry.
SMALL_FACE_EYE_DISTANCE = 30.0


class NoFaceError(ValueError):
    """The photo has no detectable face."""


@dataclass
class AlignedFace:
    image: Image.Image
    face: Face
    faces_found: int
    warnings: list[str] = field(default_factory=list)


def align_face(
    image: Image.Image,
    output_size: int,
    detector: FaceDetector | None = None,
    transform_size: int | None = None,
) -> AlignedFace:
    """Detect the largest face in ``image`` and return its FFHQ-aligned crop.

    Raises :class:`NoFaceError` when no face is found (never returns a crop of
    the background). Several faces or a small face add a warning.
    """
    detector = detector or default_detector()
    faces = detector.detect(image)
    if not faces:
        raise NoFaceError(
            "No face was found in this photo. Use a clear, front-facing photo where the face is well lit and not cut off."
        )
    face = faces[0]
    warnings = []
    if len(faces) > 1:
        warnings.append(f"{len(faces)} faces were found; the largest one was used.")
    eyes = face.points.inter_ocular
    if eyes < SMALL_FACE_EYE_DISTANCE:
        warnings.append(
            f"The face is small ({eyes:.0f} px between the eyes); the aligned crop will be blurry. "
            "A closer photo gives a better result."
        )
    size = transform_size or max(4 * output_size, 1024)
    crop = align_ffhq(image, face.points, output_size=output_size, transform_size=min(size, 4096))
    return AlignedFace(crop, face, len(faces), warnings)


__all__ = ["AlignedFace", "Face", "FaceDetector", "FivePoints", "NoFaceError", "align_face", "align_ffhq", "default_detector"]
