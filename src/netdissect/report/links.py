"""Links from a dissection run's report to the experiment pages made from that run.

Experiments (ablation, explanations, adversarial attacks, rotation, comparisons...)
write their own standalone pages.  Any page under ``RUN/experiments/`` belongs
to run RUN: a folder's ``index.html`` when it has one, else each of its
``*.html`` files (e.g. one explanation per photo)::

    RUN/report/index.html            the dissection report, with an "Experiments" section
    RUN/experiments/index.html       the list of experiment pages (written here)
    RUN/experiments/ablation-blocks.6/index.html
    RUN/experiments/explain/n01443537_goldfish.html

The report's section sits between two HTML comments (:data:`BEGIN`,
:data:`END`), so :func:`link_experiments` can refresh it in place, without
rebuilding the report, when an experiment writes a page after the report was
made; ``netdissect report RUN`` lists the pages found when it runs.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

EXPERIMENTS_DIR = "experiments"
BEGIN, END = "<!-- netdissect:experiments -->", "<!-- /netdissect:experiments -->"
_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _title(page: Path) -> str:
    try:
        head = page.read_text(encoding="utf-8", errors="replace")[:4096]
    except OSError:
        return page.parent.name
    m = _TITLE.search(head)
    return html.unescape(" ".join(m.group(1).split())) if m and m.group(1).strip() else page.stem


def experiment_pages(run_dir: str | Path) -> list[dict[str, str]]:
    """The experiment pages of a run, sorted by folder then file.

    Parameters
    ----------
    run_dir : str or pathlib.Path
        The dissection run directory.

    Returns
    -------
    list of dict
        ``name`` (the folder, or ``folder/file`` for pages without an
        ``index.html`` beside them), ``title`` (the page's ``<title>``) and
        ``path`` (absolute).  Empty when ``RUN/experiments`` does not exist.
    """
    root = Path(run_dir) / EXPERIMENTS_DIR
    if not root.is_dir():
        return []
    pages = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        index = folder / "index.html"
        files = [index] if index.is_file() else sorted(folder.glob("*.html"))
        for f in files:
            name = folder.name if f.name == "index.html" else f"{folder.name}/{f.stem}"
            pages.append({"name": name, "title": _title(f), "path": str(f.resolve())})
    return pages


def experiments_section(pages: list[dict[str, str]], base: str | Path) -> str:
    """The report's "Experiments" section (between :data:`BEGIN` and :data:`END`; empty inside without pages).

    Parameters
    ----------
    pages : list of dict
        As :func:`experiment_pages`.
    base : str or pathlib.Path
        The folder of the page the section goes in: links are relative to it.
    """
    if not pages:
        return BEGIN + END
    items = "\n".join(
        f'    <li><a href="{html.escape(Path(os.path.relpath(p["path"], base)).as_posix())}">'
        f'{html.escape(p["name"])}</a> <span class="muted">{html.escape(p["title"])}</span></li>'
        for p in pages)
    return (f'{BEGIN}\n<section class="panel" id="experiments">\n  <h2>Experiments</h2>\n'
            f"  <p>Pages of experiments made from this run (under <code>{EXPERIMENTS_DIR}/</code>).</p>\n"
            f"  <ul>\n{items}\n  </ul>\n</section>\n{END}")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def link_experiments(run_dir: str | Path, report: str | Path | None = None) -> Path | None:
    """Refresh ``RUN/experiments/index.html`` and the "Experiments" section of the run's report.

    Parameters
    ----------
    run_dir : str or pathlib.Path
        The dissection run directory.
    report : str or pathlib.Path, optional
        The report's ``index.html`` (default ``RUN/report/index.html``); left
        alone when missing or made before reports had the section.

    Returns
    -------
    pathlib.Path or None
        ``RUN/experiments/index.html``; None when the run has no experiment pages.
    """
    run_dir = Path(run_dir)
    pages = experiment_pages(run_dir)
    if not pages:
        return None
    root = run_dir / EXPERIMENTS_DIR
    report = Path(report) if report is not None else run_dir / "report" / "index.html"
    back = (f'<p><a href="{html.escape(Path(os.path.relpath(report, root)).as_posix())}">the dissection report</a>'
            "</p>\n" if report.is_file() else "")
    section = experiments_section(pages, root)
    listing = root / "index.html"
    _write_atomic(listing, "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">"
                           f"<title>Experiments: {html.escape(run_dir.name)}</title></head>\n<body>\n"
                           f"<h1>Experiments of {html.escape(str(run_dir))}</h1>\n{back}{section}\n</body>\n</html>\n")
    if report.is_file():
        text = report.read_text(encoding="utf-8")
        start, end = text.find(BEGIN), text.find(END)
        if 0 <= start < end:
            new = text[:start] + experiments_section(pages, report.parent) + text[end + len(END):]
            if new != text:
                _write_atomic(report, new)
    return listing


def run_of_page(page: str | Path) -> Path | None:
    """The run directory a page belongs to (``RUN/experiments/NAME/page.html``), or None.

    A run directory is recognised by its ``config.json``.
    """
    p = Path(page).resolve()
    for folder in p.parents:
        if folder.name == EXPERIMENTS_DIR and (folder.parent / "config.json").is_file():
            return folder.parent
    return None
