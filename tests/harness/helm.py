"""The real ``helm`` against a test's control plane, with homes of its own (nothing of the user's
helm configuration, cache or repositories)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.harness.controlplane import REPO_ROOT, tool

CHART = REPO_ROOT / "charts" / "cardano-forge"
HELM_TIMEOUT_S = 180.0


def helm_env(home: Path) -> dict[str, str]:
    """This process's environment with helm's config, cache and data directories under ``home``."""
    return {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "helm-config"),
        "HELM_CACHE_HOME": str(home / "helm-cache"),
        "HELM_DATA_HOME": str(home / "helm-data"),
    }


def run_helm(kubeconfig: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``helm <args> --kubeconfig <kubeconfig>`` (bounded; its exit status is the caller's to
    judge)."""
    return subprocess.run(
        [tool("helm"), *args, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=HELM_TIMEOUT_S,
        env=helm_env(home),
        check=False,
    )


def install_chart(
    kubeconfig: Path, home: Path, release: str, namespace: str, values: dict[str, Any]
) -> None:
    """``helm install <release>`` of the chart in ``namespace`` with ``values`` (written to
    ``home/values.yaml``); fails the test with helm's output unless it succeeded."""
    (home / "values.yaml").write_text(yaml.safe_dump(values))
    result = run_helm(
        kubeconfig, home, "install", release, str(CHART), "-n", namespace,
        "-f", str(home / "values.yaml"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
