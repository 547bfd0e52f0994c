"""The pinned Python packages of a service's image: ``services/<service>/requirements.lock``.

    python pylock.py resolve PYPROJECT LOCK    (inside the python-build base: 'make images-lock')
    python pylock.py check PYPROJECT LOCK      (before a build: does the lock still fit?)

``resolve`` asks pip which versions satisfy the pyproject's ``[project] dependencies`` and its
``[build-system] requires`` (wheels only, for this interpreter), then writes every resolved
distribution as ``name==version`` with the SHA-256 of each of that version's wheels for this Python
on the index (every platform, so a ``docker build`` on another machine verifies too). The image's
build installs exactly that with ``pip --require-hashes --no-deps``; its dependency layer is keyed
by the lock's content.

``check`` compares the lock's ``# requirements:`` line with the pyproject and exits 1 with one line
naming the fix when they differ (a dependency added to the pyproject but not locked).

Network (resolve only): the package index pip is configured with, and its simple JSON API
(``PYPI_SIMPLE_URL``, default https://pypi.org/simple) for the other platforms' wheel hashes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

HEADER = "# requirements: "


class LockError(Exception):
    """One line: what is wrong, what to change."""


def requirements(pyproject: Path) -> list[str]:
    """The pyproject's run-time dependencies and its build backend's requirements."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    deps = list(data.get("project", {}).get("dependencies", []))
    build = list(data.get("build-system", {}).get("requires", []))
    return sorted({r.replace(" ", "") for r in deps + build})


def resolve(pyproject: Path) -> list[tuple[str, str]]:
    """(name, version) of everything pip would install for the requirements, sorted."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
            "--only-binary=:all:", "--quiet", "--report", str(report),
            *requirements(pyproject),
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise LockError(f"pip could not resolve {pyproject}: {last}")
        installs = json.loads(report.read_text(encoding="utf-8"))["install"]
    return sorted((i["metadata"]["name"], i["metadata"]["version"]) for i in installs)


def this_python(interpreter: str, abi: str) -> bool:
    """Whether a wheel tag's interpreter and ABI fit this Python (any platform)."""
    major, minor = sys.version_info[:2]
    if interpreter in (f"py{major}", f"py{major}{minor}", f"cp{major}{minor}"):
        return True
    n = interpreter.removeprefix(f"cp{major}")
    return abi == "abi3" and interpreter.startswith("cp") and n.isdigit() and int(n) <= minor


def wheel_hashes(name: str, version: str) -> list[str]:
    """SHA-256 of every wheel of ``name`` ``version`` for this Python on the index."""
    from pip._vendor.packaging.utils import (  # noqa: PLC0415 (the resolver's pip; check needs none)
        InvalidWheelFilename,
        canonicalize_name,
        canonicalize_version,
        parse_wheel_filename,
    )

    base = os.environ.get("PYPI_SIMPLE_URL", "https://pypi.org/simple").rstrip("/")
    url = f"{base}/{canonicalize_name(name)}/"
    accept = {"Accept": "application/vnd.pypi.simple.v1+json"}
    request = urllib.request.Request(url, headers=accept)  # noqa: S310 (the index's URL)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (https)
            files = json.load(response)["files"]
    except (OSError, ValueError, KeyError) as exc:
        raise LockError(
            f"cannot read {url}: {exc} (set PYPI_SIMPLE_URL to an index with the JSON simple API)"
        ) from None
    hashes = set()
    for f in files:
        try:
            _, got, _, tags = parse_wheel_filename(f["filename"])
        except InvalidWheelFilename:
            continue  # an sdist or another file
        if (
            canonicalize_version(got) == canonicalize_version(version)
            and "sha256" in f["hashes"]
            and any(this_python(t.interpreter, t.abi) for t in tags)
        ):
            hashes.add(f["hashes"]["sha256"])
    if not hashes:
        raise LockError(f"{name} {version} has no wheel on {base}: the image installs wheels only")
    return sorted(hashes)


def render(pyproject: Path, pins: list[tuple[str, str]]) -> str:
    lines = [
        f"# Python packages of the image built from {pyproject.parent.name} "
        "(tools/build-images.sh), every version pinned with the SHA-256 of its wheels.",
        f"# Resolved on {datetime.now(UTC):%Y-%m-%d} for Python "
        f"{sys.version_info.major}.{sys.version_info.minor} (the python-build base).",
        "# Regenerate with 'make images-lock' after changing the pyproject's dependencies.",
        HEADER + " ".join(requirements(pyproject)),
    ]
    for name, version in pins:
        hashes = wheel_hashes(name, version)
        lines.append(f"{name}=={version} \\")
        lines += [f"    --hash=sha256:{h} \\" for h in hashes[:-1]]
        lines.append(f"    --hash=sha256:{hashes[-1]}")
    return "\n".join(lines) + "\n"


def check(pyproject: Path, lock: Path) -> None:
    if not lock.is_file():
        raise LockError(f"no {lock}: run 'make images-lock' to pin the image's Python packages")
    want = HEADER + " ".join(requirements(pyproject))
    have = [x for x in lock.read_text(encoding="utf-8").splitlines() if x.startswith(HEADER)]
    if have != [want]:
        raise LockError(
            f"{lock} was made for other requirements than {pyproject}'s: run 'make images-lock' "
            "and commit it"
        )


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("resolve", "check"):
        print("usage: pylock.py resolve|check PYPROJECT LOCK", file=sys.stderr)
        return 2
    pyproject, lock = Path(argv[1]), Path(argv[2])
    try:
        if argv[0] == "check":
            check(pyproject, lock)
        else:
            text = render(pyproject, resolve(pyproject))
            lock.write_text(text, encoding="utf-8")
            print(f"pylock: {text.count('==')} packages in {lock.name}", flush=True)
    except LockError as exc:
        print(f"pylock: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
