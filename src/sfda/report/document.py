"""The Markdown report that ties tables and figures together.

Figure links are written relative to the report's folder so the whole folder
can be moved, zipped or viewed on a code host without broken images.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import Sequence

from sfda.errors import SfdaError
from sfda.io.atomic import write_text


def write_report(out_dir: str | os.PathLike, title: str, sections: Sequence[tuple[str, str]],
                 figures: Sequence[tuple[str, str | os.PathLike]]) -> Path:
    """Write ``out_dir/report.md``: title, each (heading, body) section, each figure with a caption."""
    out = Path(out_dir)
    parts = [f"# {title}".rstrip(), ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.strip(), ""]
    for caption, path in figures:
        link = relative_link(out, path)
        parts += [f"## {caption}", "", f"![{_alt(caption)}]({link})", ""]
    report = out / "report.md"
    write_text(report, "\n".join(parts).rstrip() + "\n")
    return report


def relative_link(out_dir: Path, figure: str | os.PathLike) -> str:
    """POSIX path of ``figure`` relative to ``out_dir``; it must exist.

    A relative ``figure`` is taken relative to ``out_dir`` when it exists there
    (the usual case: figures saved next to the report), else to the working
    directory.
    """
    fig = Path(figure)
    if not fig.is_absolute() and (out_dir / fig).exists():
        fig = out_dir / fig
    if not fig.exists():
        raise SfdaError(f"write_report: figure {figure} does not exist; render it before writing the report")
    rel = os.path.relpath(fig.resolve(), out_dir.resolve())
    link = PurePath(rel).as_posix()
    return f"<{link}>" if any(ch in link for ch in " ()<>") else link


def _alt(caption: str) -> str:
    """Alt text without brackets, which would end the image syntax early."""
    return caption.replace("[", "(").replace("]", ")").replace("\n", " ")
