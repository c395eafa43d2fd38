"""PATH arguments -> image files: files as given, folders searched recursively, globs expanded."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

# Extensions a folder is searched for; a file named explicitly is tried whatever its name.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
GLOB_CHARS = set("*?[")


def _folder_images(folder: Path) -> list[str]:
    return sorted(
        str(p) for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def expand(arguments: Iterable[str]) -> list[str]:
    """Every image the arguments name, in order, each once.

    A folder gives its images (by extension, recursively, sorted); a glob (quoted, so the
    shell left it alone; `**` recurses) gives its matches; anything else is kept as a file
    path, so a missing file is reported as bad rather than silently dropped.
    """
    found: list[str] = []
    for argument in arguments:
        if GLOB_CHARS & set(argument) and not Path(argument).exists():
            matches = sorted(glob.glob(argument, recursive=True)) or [argument]  # none: bad
            for match in matches:
                found.extend(_folder_images(Path(match)) if Path(match).is_dir() else [match])
        elif Path(argument).is_dir():
            found.extend(_folder_images(Path(argument)))
        else:
            found.append(argument)
    return list(dict.fromkeys(found))
