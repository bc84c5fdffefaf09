"""README's layout table matches the tree (issue 19): every path it names exists, and every
module of fastrnn/ (and of its backend packages, and every kernels/ header) is named in it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layout_rows():
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    return [row.split(" | ", 1) for row in rows[1:]]  # (path column, holds column), header dropped


def _named(column: str) -> list:
    return re.findall(r"`([^`]+)`", column)


def test_every_path_in_the_layout_table_exists():
    for paths, _ in _layout_rows():
        for path in _named(paths):
            assert (ROOT / path).exists(), f"README's layout table names {path}, which does not exist"


def test_every_module_is_in_the_layout_table():
    named = set()
    for paths, holds in _layout_rows():
        for token in _named(paths) + _named(holds):
            named.add(token.rstrip("/"))
            named.add(Path(token).name)
    wanted = [p for p in (ROOT / "fastrnn").glob("*.py") if not p.name.startswith("_")]
    wanted += [p for p in (ROOT / "fastrnn").iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    for package in ("triton", "cuda"):  # the backend families: file by file
        wanted += [p for p in (ROOT / "fastrnn" / package).glob("*.py") if not p.name.startswith("_")]
    wanted += list((ROOT / "kernels").glob("*.cuh"))
    missing = [str(p.relative_to(ROOT)) for p in wanted
               if str(p.relative_to(ROOT)) not in named and p.name not in named]
    assert missing == [], f"not in README's layout table: {missing}"
