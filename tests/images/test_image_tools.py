"""The Python tools of the image builds (tools/images/venv_trim.py, tools/images/pylock.py), on
small virtualenvs made here: no image, no network."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.harness import oci

TOOLS = oci.REPO_ROOT / "tools" / "images"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


venv_trim = load("venv_trim")
pylock = load("pylock")


def dist(site: Path, name: str, version: str, requires: list[str], files: dict[str, str]) -> None:
    """An installed distribution: its files, METADATA and RECORD."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    headers = [f"Name: {name}", f"Version: {version}", *(f"Requires-Dist: {r}" for r in requires)]
    (info / "METADATA").write_text("\n".join([*headers, "", "A description."]) + "\n")
    record = []
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
        record.append(f"{rel},,")
    record += [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n")


@pytest.fixture
def venv(tmp_path: Path) -> tuple[Path, Path]:
    """(site-packages, pyproject) of a project that depends on ``a``."""
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    dist(site, "a", "1.0", ["b>=1", 'c; extra == "x"'], {
        "a/__init__.py": "import b\ntry:\n    import c\nexcept ImportError:\n    c = None\n",
        "a/sub/__init__.py": "import c\n",
    })  # fmt: skip
    dist(site, "b", "2.0", [], {"b/__init__.py": ""})
    dist(site, "c", "1.0", [], {"c/__init__.py": ""})
    dist(site, "pip", "23.0.1", [], {"pip/__init__.py": "", "../../../bin/pip": "#!python\n"})
    (site.parents[2] / "bin").mkdir(exist_ok=True)
    (site.parents[2] / "bin" / "pip").write_text("#!python\n")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "p"\ndependencies = ["a>=1"]\n')
    return site, pyproject


def test_trim_keeps_what_the_dependencies_reach(venv: tuple[Path, Path]) -> None:
    site, pyproject = venv
    summary = venv_trim.trim(site, pyproject, [], ["a/sub"])
    assert summary.startswith("venv_trim: kept 2 distributions; removed c, pip; dropped a/sub")
    assert sorted(p.name for p in site.iterdir()) == [
        "a",
        "a-1.0.dist-info",
        "b",
        "b-2.0.dist-info",
    ]
    assert not (site.parents[2] / "bin" / "pip").exists()
    assert not (site / "a" / "sub").exists()


def test_a_cut_that_breaks_an_import_stops_the_build(venv: tuple[Path, Path]) -> None:
    site, pyproject = venv
    with pytest.raises(venv_trim.TrimError, match=r"a/__init__.py:1 imports b, which this trim"):
        venv_trim.trim(site, pyproject, ["a:b"], [])


def test_a_lock_that_no_longer_fits_the_pyproject_is_named(venv: tuple[Path, Path]) -> None:
    site, pyproject = venv
    pyproject.write_text('[project]\nname = "p"\ndependencies = ["a>=1", "d"]\n')
    with pytest.raises(venv_trim.TrimError, match=r"p requires d, which is not installed.*"):
        venv_trim.trim(site, pyproject, [], [])
    pyproject.write_text('[project]\nname = "p"\ndependencies = ["a>=1", "b>=3"]\n')
    with pytest.raises(venv_trim.TrimError, match=r"p requires b>=3, but the lock installed b 2.0"):
        venv_trim.trim(site, pyproject, [], [])


def test_pylock_check_names_the_fix(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[build-system]\nrequires = ["setuptools>=69"]\n'
        '[project]\nname = "p"\ndependencies = ["requests >= 2.31", "PyYAML>=6"]\n'
    )
    lock = tmp_path / "requirements.lock"
    with pytest.raises(pylock.LockError, match=r"no .*requirements.lock: run 'make images-lock'"):
        pylock.check(pyproject, lock)
    lock.write_text("# requirements: PyYAML>=6 requests>=2.31 setuptools>=69\nrequests==2.32.0\n")
    pylock.check(pyproject, lock)
    pyproject.write_text(pyproject.read_text().replace("PyYAML>=6", "PyYAML>=7"))
    with pytest.raises(pylock.LockError, match=r"other requirements.*run 'make images-lock'"):
        pylock.check(pyproject, lock)


@pytest.mark.parametrize(
    ("interpreter", "abi", "fits"),
    [
        ("py3", "none", True),
        ("cp311", "cp311", True),
        ("cp38", "abi3", True),
        ("cp312", "cp312", False),
        ("cp312", "abi3", False),
        ("py2", "none", False),
        ("pp310", "pypy310_pp73", False),
    ],
)
def test_pylock_hashes_only_wheels_for_this_python(interpreter: str, abi: str, fits: bool) -> None:
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the cases are written for Python 3.11, the images' Python")
    assert pylock.this_python(interpreter, abi) is fits
