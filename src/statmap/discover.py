"""Finding statmap files in a directory: the one listing every reader uses.

A published file is ``NAME.statmap`` (process files and archives alike);
names that start with ``.`` are hidden: files still being built, locks.
The collector, the cleaner, the CLI and the dashboard all list a directory
through ``scan_directory`` and differ only in what they do with the names.
"""

from __future__ import annotations

import os

FILE_SUFFIX = ".statmap"


def scan_directory(directory: str, *, hidden: bool = False) -> list[tuple[str, int]]:
    """(name, inode) of the published files in ``directory``, sorted by name.

    ``hidden``: every hidden name too, whatever it ends with (temporary files
    and locks, for the cleaner to judge). A missing directory holds nothing;
    any other failure to list it raises OSError.
    """
    try:
        with os.scandir(directory) as it:
            found = [
                (e.name, e.inode())
                for e in it
                if (e.name.endswith(FILE_SUFFIX) and not e.name.startswith(".")) or (hidden and e.name.startswith("."))
            ]
    except FileNotFoundError:
        return []
    found.sort()
    return found


def statmap_files(directory: str) -> list[str]:
    """Paths of the published files in ``directory``, sorted; hidden (temporary) files are left out."""
    return [os.path.join(directory, name) for name, _ in scan_directory(directory)]
