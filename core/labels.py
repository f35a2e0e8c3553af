"""Folders of photos with a labels CSV: the one reader used for training and for fitting directions.

The CSV's first column (or a column named file / filename / image / id) names
each photo: by file name, by stem, or by the part of the stem before the first
underscore (``001`` matches ``001_03.jpg``). Columns about ethnicity, race or
the like are dropped on reading: Latent Lab never learns or infers them.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
KEY_COLUMNS = ("file", "filename", "image", "path", "id")
MISSING = frozenset({"", "na", "n/a", "nan", "none", "?"})  # empty cells of a numeric column
EXCLUDED = re.compile(r"(?:^|[_\W])(eth\w*|race|racial|skin\w*|nationality|origin)(?:$|[_\W])", re.I)


def excluded(column: str) -> bool:
    """Whether a label column is about ethnicity, race or the like (never used)."""
    return bool(EXCLUDED.search(column))


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"The image folder '{folder}' does not exist.")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"The folder '{folder}' holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
    return files


def read_labels(csv_path: str | Path) -> tuple[str, dict[str, dict[str, str]]]:
    """(key column, rows keyed by it); excluded columns are dropped on reading."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            raise ValueError(f"The labels file '{csv_path}' has no header row.")
        names = [n for n in reader.fieldnames if n]
        key = next((n for n in names if n.strip().lower() in KEY_COLUMNS), names[0])
        rows = {}
        for row in reader:
            ident = (row.get(key) or "").strip()
            if ident:
                rows[ident] = {k: (v or "").strip() for k, v in row.items() if k and not excluded(k)}
    if not rows:
        raise ValueError(f"The labels file '{csv_path}' has no rows.")
    return key, rows


def row_key(path: Path, rows: dict[str, dict[str, str]]) -> str | None:
    """The CSV row a photo belongs to, or None."""
    for candidate in (path.name, path.stem, path.stem.split("_")[0]):
        if candidate in rows:
            return candidate
    return None
