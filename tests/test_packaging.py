"""What the wheel ships: the library, the evaluation bridge and the dashboard, no test data."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_no_test_or_bench_data_builders():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = find_packages(where=str(ROOT), include=include)
    assert {package.split(".")[0] for package in packages} == {"care", "evaluation", "analysis_app"}
    shipped = [
        path for package in packages for path in (ROOT / package.replace(".", "/")).glob("*.py")
    ]
    assert len(shipped) > 50
    # The builders live in tests/fixtures/; nothing shipped may import them.
    importing = re.compile(r"^\s*(from|import)\s+(fixtures|tests)\b", re.MULTILINE)
    assert [
        path.name for path in shipped if importing.search(path.read_text(encoding="utf-8"))
    ] == []
    assert not any(path.name in ("fixtures.py", "synthetic.py") for path in shipped)
