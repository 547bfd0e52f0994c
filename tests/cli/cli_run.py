"""Running the installed ``cardano-forge`` command as an operator would (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.harness.controlplane import REPO_ROOT, TOOLS_BIN

CLI_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    code: int
    out: str
    err: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.out)

    def yaml(self) -> Any:
        return yaml.safe_load(self.out)

    def __str__(self) -> str:
        return f"$ cardano-forge {' '.join(self.args)}\n[exit {self.code}]\n{self.out}\n{self.err}"


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.pop("KUBECONFIG", None)
    env["PATH"] = os.pathsep.join(
        [str(Path(sys.executable).parent), str(TOOLS_BIN), env.get("PATH", "")]
    )
    return env


def cardano_forge(
    *args: str,
    kubeconfig: Path | None = None,
    namespace: str | None = None,
    timeout: float = CLI_TIMEOUT_S,
) -> Run:
    argv = [sys.executable, "-m", "cardano_forge_cli"]
    if kubeconfig is not None:
        argv += ["--kubeconfig", str(kubeconfig)]
    if namespace is not None:
        argv += ["-n", namespace]
    argv += list(args)
    started = time.monotonic()
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(),
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return Run(tuple(args), done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def one_line_error(run: Run) -> str:
    """The error of a failed run, checked to be exactly one line on stderr."""
    assert run.code != 0, run
    lines = [ln for ln in run.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), run
    return lines[0]
