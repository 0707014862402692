"""MkDocs hook: the command and config reference pages, generated from the `sfda` parser and the
config declarations at every build (``sfda.cli_help.reference_pages``), never written by hand."""

from __future__ import annotations

import sys
from pathlib import Path


def on_files(files, config):
    from mkdocs.structure.files import File

    src = str(Path(config.config_file_path).parent / "src")  # this checkout's sources, not another install
    if src not in sys.path:
        sys.path.insert(0, src)
    from sfda.cli import build_parser
    from sfda.cli_help import reference_pages

    for path, text in reference_pages(build_parser()).items():
        files.append(File.generated(config, path, content=text))
    return files
