"""Build hook: compile the decode's JSON lines extension (``sluice.sources._jsonlines``).

The extension is optional: without a C compiler the build goes on with a warning and Sluice
decodes every JSON line with DuckDB (correct, slower). It is compiled into ``src/`` so that
editable installs and ``PYTHONPATH=src`` find it, and added to wheels from there.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

EXTENSION = "sluice.sources._jsonlines"


def build_extension(root: Path) -> Path:
    """Compile the extension in place under ``root/src``; return the built file."""
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    native = root / "native"
    extension = Extension(
        EXTENSION,
        sources=[str(native / "jsonlines.c"), str(native / "yyjson" / "yyjson.c")],
        include_dirs=[str(native)],
        extra_compile_args=[] if sys.platform == "win32" else ["-O3", "-std=c99"],
    )
    distribution = Distribution({"ext_modules": [extension], "package_dir": {"": "src"}})
    command = build_ext(distribution)
    command.inplace = True
    command.build_temp = str(root / "build" / "native")
    command.ensure_finalized()
    command.run()
    return Path(command.get_ext_fullpath(EXTENSION))


class NativeBuildHook(BuildHookInterface):  # type: ignore[misc]
    """Compile the extension; a wheel that has it is platform-specific."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Build before the wheel (or editable wheel) is assembled."""
        root = Path(self.root)
        try:
            built = build_extension(root)
        except Exception as exc:  # no compiler, no headers: Sluice works without it
            print(
                f"warning: the JSON lines extension was not built ({exc}); JSON is decoded "
                "by DuckDB instead",
                file=sys.stderr,
            )
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            relative = built.relative_to(root / "src")
            build_data["force_include"][str(built)] = str(relative)
