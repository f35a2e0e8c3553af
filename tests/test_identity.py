"""Identity descriptor and face mask on real faces (London, shared data); skipped without ../shared."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.faces import align_face
from core.faces.identity import SAME_PERSON, default_identity, distances
from core.image_input import IDENTITY_SIDE, load_image, model_input
from tests.conftest import shared_path

PEOPLE = ("001", "002", "003", "005", "006", "007")


@pytest.fixture(scope="module")
def london():
    """Per person, the 128 px aligned crops of the neutral and the smiling photo."""
    root = shared_path("data", "faces", "london")
    out = {}
    for pid in PEOPLE:
        out[pid] = [align_face(load_image(root / sub / f"{pid}_{n}.jpg"), 128) for sub, n in (("neutral", "03"), ("smiling", "08"))]
    return out


def test_same_person_is_closer_than_strangers_for_most_pairs(london):
    ident = default_identity()
    neutral = ident.descriptors([v[0].image for v in london.values()])
    smiling = ident.descriptors([v[1].image for v in london.values()])
    d = distances(neutral, smiling)  # (people, people): diagonal = same person
    same = np.diag(d)
    others = d[~np.eye(len(d), dtype=bool)].reshape(len(d), -1)
    closer = same[:, None] < others  # every (person, stranger) comparison
    assert closer.mean() >= 0.9, f"same person closer than a stranger in only {closer.mean():.0%} of comparisons"
    assert np.median(same) < SAME_PERSON < np.median(others)


def test_descriptor_works_on_a_64_px_face(london):
    ident = default_identity()
    crops = [v[0].image for v in london.values()]
    small = [c.resize((64, 64), Image.LANCZOS) for c in crops]
    d = distances(ident.descriptors(small), ident.descriptors(crops))
    own = np.diag(d)
    assert np.median(own) < 0.4  # a 64 px copy still reads as the same person
    assert (own[:, None] < d).sum(1).min() >= len(d) - 1  # and is nearest to its own photo


def test_mask_covers_the_face_and_not_the_background(london):
    for aligned, _ in london.values():
        size = 64
        mask = aligned.mask(size)
        assert mask.shape == (size, size) and mask.dtype == np.float32
        lm = np.clip(np.round(aligned.landmarks(size)).astype(int), 0, size - 1)
        inner = mask[lm[27:68, 1], lm[27:68, 0]]  # nose, eyes, mouth
        outline = mask[lm[0:27, 1], lm[0:27, 0]]  # jaw and brows lie on the hull: the feathered edge
        assert inner.min() > 0.95
        assert outline.min() > 0.6
        corners = mask[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert corners.max() < 0.01
        assert 0.2 < mask.mean() < 0.7  # a face, not the whole crop or a speck


def test_model_input_brings_the_mask_and_a_sharp_reference():
    photo = load_image(shared_path("data", "faces", "london", "neutral", "002_03.jpg"))
    inp = model_input(photo, 64, 3, align_face=True)
    aligned = align_face(photo, 64)
    assert inp.image.size == (64, 64) and inp.warnings == aligned.warnings
    np.testing.assert_allclose(inp.mask, aligned.mask(64), atol=1e-5)
    assert inp.reference.size == (IDENTITY_SIDE, IDENTITY_SIDE) and tuple(inp.weights.shape) == (1, 1, 64, 64)
    # aligned once at the reference's size and shrunk: the model's crop is the same picture as aligning at 64 directly
    diff = np.abs(np.asarray(inp.image, np.float32) - np.asarray(aligned.image, np.float32))
    assert diff.mean() < 3.0
    plain = model_input(photo, 32, 3, align_face=False)
    assert plain.image.size == (32, 32) and plain.mask is None and plain.reference is None and plain.weights is None
