"""The exceptions statmap raises: one base class, one type per kind of problem."""

from __future__ import annotations


class StatmapError(Exception):
    """Base class of every error statmap raises on purpose."""


class FormatError(StatmapError):
    """A file is not a sound statmap file. ``path`` names it, ``problem`` says why."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class DirectoryError(StatmapError):
    """The statmap directory is missing, unusable or unsafe."""


class PublishError(StatmapError):
    """A publisher could not create or grow its file (full disk, permissions...)."""


class LabelLimitError(StatmapError, ValueError):
    """A labelled metric reached its limit on distinct label sets."""


class CollectionError(StatmapError):
    """A collection could not read what it needs (a directory, an archive, descriptors, memory).

    Nothing partial is reported instead: lower totals would look like a counter reset.
    """


class ResourceError(CollectionError):
    """This process ran out of descriptors, memory or mappings while reading a file."""
