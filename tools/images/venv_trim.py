"""Keeps in an image's virtualenv only what a project needs at run time, and checks it.

    python venv_trim.py SITE_PACKAGES PYPROJECT [--cut DIST:REQUIREMENT]... [--drop DIR]...

Run by the services' Dockerfiles after the pinned dependencies are installed (before the project
itself). Starting from the ``[project] dependencies`` of PYPROJECT, it follows the requirements of
every installed distribution (markers evaluated for this interpreter, no extras) and stops with one
line naming what to change when one is missing or its version is outside the requirement: the lock
no longer matches the pyproject (``make images-lock``). Then:

* ``--cut kubernetes:aiohttp`` does not follow that one requirement: kubernetes' asyncio client
  (``kubernetes.aio``) needs aiohttp, its synchronous client, the one the forge manager uses, does
  not;
* every installed distribution nothing reaches is removed (the files its RECORD lists);
* ``--drop kubernetes/aio`` removes that directory of SITE_PACKAGES (a subpackage nothing uses);
* finally no remaining module may import, outside ``try: ... except ImportError`` and ``if
  TYPE_CHECKING:``, a package of a removed distribution or a dropped subpackage: a cut that breaks
  an import stops the build here rather than the container at run time.

Needs ``packaging`` (pip's vendored copy will do); reads nothing but SITE_PACKAGES and PYPROJECT.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # the installer's virtualenv has pip, which vendors it
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    from pip._vendor.packaging.utils import canonicalize_name  # type: ignore[no-redef]


class TrimError(Exception):
    """One line: what is wrong, what to change."""


@dataclass
class Dist:
    name: str
    version: str
    info: Path
    """The ``.dist-info`` directory."""
    requires: list[str] = field(default_factory=list)


def read_dists(site: Path) -> dict[str, Dist]:
    """The distributions installed in ``site``, by canonical name."""
    out: dict[str, Dist] = {}
    for info in sorted(site.glob("*.dist-info")):
        meta = info / "METADATA"
        if not meta.is_file():
            continue
        name = version = ""
        requires = []
        for line in meta.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                break  # the headers end at the first empty line
            key, _, value = line.partition(":")
            if key == "Name":
                name = value.strip()
            elif key == "Version":
                version = value.strip()
            elif key == "Requires-Dist":
                requires.append(value.strip())
        if name:
            out[canonicalize_name(name)] = Dist(name, version, info, requires)
    return out


def needed(
    roots: list[str], dists: dict[str, Dist], cuts: set[tuple[str, str]], origin: str
) -> set[str]:
    """Canonical names of the distributions ``roots`` need, checked against what is installed."""
    keep: set[str] = set()
    todo: list[tuple[str, str]] = [(origin, r) for r in roots]
    while todo:
        who, text = todo.pop()
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if (canonicalize_name(who), name) in cuts:
            continue
        dist = dists.get(name)
        if dist is None:
            raise TrimError(
                f"{who} requires {text}, which is not installed: the lock does not match "
                "the pyproject; run 'make images-lock'"
            )
        if req.specifier and not req.specifier.contains(dist.version, prereleases=True):
            raise TrimError(
                f"{who} requires {text}, but the lock installed {dist.name} {dist.version}: "
                "run 'make images-lock'"
            )
        if name not in keep:
            keep.add(name)
            todo.extend((dist.name, r) for r in dist.requires)
    return keep


def record_paths(site: Path, dist: Dist) -> list[Path]:
    """The files a distribution installed (its RECORD), inside the virtualenv only."""
    venv = site.parents[2]
    out = []
    record = dist.info / "RECORD"
    lines = record.read_text(encoding="utf-8").splitlines() if record.is_file() else []
    for line in lines:
        rel = line.rsplit(",", 2)[0] if line.count(",") >= 2 else line
        path = Path(os.path.normpath(site / rel))
        if rel and path.is_relative_to(venv):
            out.append(path)
    return [*out, dist.info]


def top_level_names(site: Path, dist: Dist) -> set[str]:
    """The importable names a distribution provides (from its RECORD)."""
    names = set()
    for path in record_paths(site, dist):
        if not path.is_relative_to(site) or path == site:
            continue
        first = path.relative_to(site).parts[0]
        if first.endswith((".dist-info", ".pth")) or first == "__pycache__":
            continue
        names.add(first.removesuffix(".py").split(".")[0])
    return names


def remove(site: Path, paths: list[Path]) -> int:
    """Remove files and directories; then the directories they leave empty. Bytes freed."""
    freed = 0
    parents = set()
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            freed += path.lstat().st_size
            path.unlink()
        parents.add(path.parent)
    venv = site.parents[2]
    for start in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        parent = start
        while parent != venv and parent.is_relative_to(venv) and parent.is_dir():
            if any(parent.iterdir()):
                break
            parent.rmdir()
            parent = parent.parent
    return freed


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether an import only runs when it may fail (try/except ImportError) or never runs."""
    child = node
    parent = parents.get(node)
    while parent is not None:
        if isinstance(parent, ast.Try) and child in parent.body:
            for handler in parent.handlers:
                caught = handler.type
                names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
                for n in names:
                    if n is None or (
                        isinstance(n, ast.Name)
                        and n.id in {"ImportError", "ModuleNotFoundError", "Exception"}
                    ):
                        return True
        if isinstance(parent, ast.If) and child in parent.body:
            test = ast.unparse(parent.test)
            if test in {"TYPE_CHECKING", "typing.TYPE_CHECKING"}:
                return True
        child, parent = parent, parents.get(parent)
    return False


def imports(path: Path, package: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of the unguarded imports in one source file."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        return
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            modules = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        if not _guarded(node, parents):
            for module in modules:
                yield node.lineno, module


def check_imports(site: Path, gone: set[str]) -> None:
    """Raise unless no remaining module imports a module in ``gone`` (or below it)."""
    for path in sorted(site.rglob("*.py")):
        rel = path.relative_to(site)
        package = ".".join(rel.parts[:-1])  # of a module and of a package's __init__ alike
        for line, module in imports(path, package):
            for name in gone:
                if module == name or module.startswith(name + "."):
                    raise TrimError(
                        f"{rel}:{line} imports {module}, which this trim removes: "
                        "remove the --cut/--drop that takes it away"
                    )


def trim(site: Path, pyproject: Path, cuts: list[str], drops: list[str]) -> str:
    """Trim ``site``; a one-line summary."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    roots = list(project.get("dependencies", []))
    origin = str(project.get("name", pyproject))
    cut_pairs = set()
    for cut in cuts:
        dist, sep, req = cut.partition(":")
        if not sep or not dist or not req:
            raise TrimError(f"--cut {cut!r} is not DIST:REQUIREMENT (e.g. kubernetes:aiohttp)")
        cut_pairs.add((canonicalize_name(dist), canonicalize_name(req)))
    dists = read_dists(site)
    keep = needed(roots, dists, cut_pairs, origin)
    unused = sorted(set(dists) - keep)
    gone: set[str] = set()
    paths: list[Path] = []
    for name in unused:
        gone |= top_level_names(site, dists[name])
        paths += record_paths(site, dists[name])
    for drop in drops:
        target = site / drop
        if not target.is_dir() or not target.resolve().is_relative_to(site.resolve()):
            raise TrimError(f"--drop {drop}: no such directory in {site}")
        gone.add(".".join(Path(drop).parts))
        paths.append(target)
    freed = remove(site, paths)
    check_imports(site, gone)
    removed = ", ".join(dists[n].name for n in unused) or "nothing"
    return (
        f"venv_trim: kept {len(keep)} distributions; removed {removed}"
        f"{'; dropped ' + ', '.join(drops) if drops else ''} ({freed / 2**20:.1f} MiB)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="venv_trim.py", description=__doc__.split("\n")[0])
    parser.add_argument("site_packages", type=Path)
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--cut", action="append", default=[], metavar="DIST:REQUIREMENT")
    parser.add_argument("--drop", action="append", default=[], metavar="DIR")
    args = parser.parse_args(argv)
    try:
        if not args.site_packages.is_dir():
            raise TrimError(f"{args.site_packages} is not a directory")
        print(trim(args.site_packages, args.pyproject, args.cut, args.drop), flush=True)
    except TrimError as exc:
        print(f"venv_trim: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
