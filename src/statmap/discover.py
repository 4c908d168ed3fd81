"""Finding statmap files in a directory."""

from __future__ import annotations

import os

FILE_SUFFIX = ".statmap"


def statmap_files(directory: str) -> list[str]:
    """Paths of the published files in ``directory``, sorted; hidden (temporary) files are left out."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(directory, n) for n in names if n.endswith(FILE_SUFFIX) and not n.startswith("."))
