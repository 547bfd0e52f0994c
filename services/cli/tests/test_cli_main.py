"""The command line: one-line errors and exit codes before any API is contacted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cardano_forge_cli.main import main


@pytest.mark.parametrize(
    ("argv", "code", "expected"),
    [
        (["switchover", "--to-region"], 2, "error: argument --to-region: expected one argument"),
        (["switchover"], 2, "one of the arguments --to-region --to-pod is required"),
        (["pause", "east", "--reason", "x"], 2, "the following arguments are required: --for"),
        (["status", "-o", "xml"], 2, "argument -o/--output: invalid choice: 'xml'"),
        (
            ["pause", "east", "--for", "2x", "--reason", "r"],
            1,
            "error: --for '2x' is not a duration: use a number with a unit, e.g. 30s",
        ),
        (["pause", "east", "--for", "60d", "--reason", "r"], 1, "longer than the allowed 30d"),
        (["status", "--watch", "--interval", "0s"], 1, "--interval '0s' must be greater than zero"),
        (["status", "--request-timeout", "soon"], 1, "--request-timeout 'soon' is not a duration"),
        (
            ["status", "--kubeconfig", "/nonexistent/kubeconfig"],
            1,
            "error: cannot read the kubeconfig (/nonexistent/kubeconfig)",
        ),
    ],
)
def test_bad_input_is_one_line_and_non_zero(
    argv: list[str], code: int, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert expected in err
    assert len(err.strip().splitlines()) == 1, err


def test_version_and_completion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("cardano-forge ")
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert "cardano-forge" in script and "kubectl-cardano_forge" in script and "complete" in script


def test_unknown_context(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: a\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: a, context: {cluster: c, user: u}},\n"
        "           {name: b, context: {cluster: c, user: u}}]\n"
    )
    assert main(["status", "--kubeconfig", str(config), "--context", "zz"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: no context 'zz' in the kubeconfig (context 'zz' of {config}): "
        "the contexts are a, b"
    )
    assert main(["status", "--kubeconfig", str(config), "--request-timeout", "2s"]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: cannot list ")
        and "127.0.0.1:1 is unreachable (connection refused)" in err
    )
    assert len(err.splitlines()) == 1


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def test_shell_completion_of_commands_and_options(tmp_path: Path) -> None:
    out = tmp_path / "completions"
    line = "cardano-forge switchover --to"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        "_ARGCOMPLETE_IFS": "\n",
    }
    subprocess.run([_script("cardano-forge")], env=env, check=True, timeout=60)
    assert set(out.read_text().split()) == {"--to-region", "--to-pod"}
    done = subprocess.run(
        [_script("kubectl_complete-cardano_forge"), "pa"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.split() == ["pause", ":4"]
