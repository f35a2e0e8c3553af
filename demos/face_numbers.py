"""Face numbers as people see them: 1 = the largest face of a photo, counting up.

Core counts faces from 0 (``core.faces.align_face(which=...)``, ``Family.set_parent(face=...)``); every edge the
user touches (the tabs' face picker, their API, the CLI's ``--face``) counts from 1 and is translated here, so a
refusal always names the number the user gave. No Gradio here: the CLI uses it too.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any


def face_index(number: Any, count: int, what: str = "the face number") -> int:
    """The 0-based index of face ``number`` (1-based; None: 1) among ``count`` faces, or a ValueError that says
    which numbers exist."""
    number = 1 if number is None else number
    named = what[:1].upper() + what[1:]
    if isinstance(number, bool) or not isinstance(number, (int, float)) or number != number or int(number) != number \
            or number < 1:
        raise ValueError(f"{named} counts from 1 (1 = the largest face); got {number}.")
    if count == 1 and number != 1:
        raise ValueError(f"Only one face was found in this photo, so {what} must be 1; got {int(number)}.")
    if number > count:
        raise ValueError(f"{count} faces were found in this photo, so {what} must be from 1 to {count}; got {int(number)}.")
    return int(number) - 1


def set_parent_face(fam, who: str, path: str | None, number: Any, what: str = "the face number"):
    """``fam.set_parent`` (core.family.Family) with a 1-based face number: a number the photo does not have becomes
    that parent's ``error``, worded with the user's number. Detection and alignment are cached by the Family, so
    looking at the largest face first costs nothing more."""
    parent = fam.set_parent(who, path, 0)
    if not path or parent.error:
        return parent
    try:
        index = face_index(number, len(parent.faces), what)
    except ValueError as e:
        fam.parents[who] = replace(parent, crop=None, mask=None, reference=None, warnings=[], error=str(e))
        return fam.parents[who]
    return fam.set_parent(who, path, index) if index else parent
