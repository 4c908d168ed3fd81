"""Builds the optional C value cells; without a compiler the install still succeeds.

Set STATMAP_SANITIZE=1 to build them with AddressSanitizer and
UndefinedBehaviorSanitizer (see docs/development.md).
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

flags = ["-std=c11", "-O2", "-Wall", "-Wextra", "-fno-strict-aliasing"]
link = []
if os.environ.get("STATMAP_SANITIZE"):
    flags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    link += ["-fsanitize=address,undefined"]
if os.environ.get("STATMAP_WERROR"):
    flags.append("-Werror")


class OptionalBuildExt(build_ext):
    """Like markupsafe's speedups: a failed build falls back to the pure-Python cells."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure means "no extension"
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            if os.environ.get("STATMAP_REQUIRE_C"):
                raise
            self._warn(exc)

    @staticmethod
    def _warn(exc):
        sys.stderr.write(f"statmap: C value cells not built ({exc}); using the pure-Python cells\n")


setup(
    ext_modules=[
        Extension(
            "statmap._cells",
            # one extension from four files; the flags above apply to each
            sources=["src/statmap/_cells.c", "src/statmap/_family.c", "src/statmap/_reads.c", "src/statmap/_records.c"],
            depends=["src/statmap/_cells.h", "src/statmap/_exp_bounds.h", "src/statmap/_exp_index.h"],
            extra_compile_args=flags,
            extra_link_args=link,
            optional=True,
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
