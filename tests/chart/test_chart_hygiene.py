"""Chart hygiene: what `ct lint` checks, the generated values table, metadata, licence, changelog.

chart-testing (`ct`) is not on the Go module proxy, so its lint rules run here instead: the
Chart.yaml schema (ct's `chart_schema.yaml`), yamllint with ct's `lintconf.yaml` on Chart.yaml and
values.yaml, and `helm lint --strict` once per `ci/*-values.yaml`. The README's values table is
helm-docs' output for the committed values.yaml: a test re-generates it and fails on any drift.
"""

from __future__ import annotations

import filecmp
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from yamllint import config as yamllint_config
from yamllint import linter

from tests.harness.controlplane import tool

pytestmark = pytest.mark.chart

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "cardano-forge"
CRD_FILE = REPO_ROOT / "crds" / "cardanoforgeclusters.cardano.io.yaml"
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
)

# chart-testing's etc/lintconf.yaml: the yamllint rules `ct lint` applies.
CT_LINTCONF = """
rules:
  braces:
    min-spaces-inside: 0
    max-spaces-inside: 0
    min-spaces-inside-empty: -1
    max-spaces-inside-empty: -1
  brackets:
    min-spaces-inside: 0
    max-spaces-inside: 0
    min-spaces-inside-empty: -1
    max-spaces-inside-empty: -1
  colons:
    max-spaces-before: 0
    max-spaces-after: 1
  commas:
    max-spaces-before: 0
    min-spaces-after: 1
    max-spaces-after: 1
  comments:
    require-starting-space: true
    min-spaces-from-content: 2
  document-end: disable
  document-start: disable
  empty-lines:
    max: 2
    max-start: 0
    max-end: 0
  hyphens:
    max-spaces-after: 1
  indentation:
    spaces: consistent
    indent-sequences: whatever
    check-multi-line-strings: false
  key-duplicates: enable
  line-length: disable
  new-line-at-end-of-file: enable
  new-lines:
    type: unix
  trailing-spaces: enable
  truthy:
    level: warning
"""


def chart_yaml() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return doc


def values() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return doc


def annotation(name: str) -> Any:
    return yaml.safe_load(chart_yaml()["annotations"][f"artifacthub.io/{name}"])


# --------------------------------------------------------------------------- the values table


def helm_docs(chart_copy: Path) -> None:
    result = subprocess.run(
        [
            tool("helm-docs"),
            "--chart-search-root",
            str(chart_copy.parent),
            "--sort-values-order",
            "file",
            "--log-level",
            "warning",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_readme_values_table_is_helm_docs_output(tmp_path: Path) -> None:
    copy = tmp_path / "charts" / CHART.name
    shutil.copytree(CHART, copy)
    (copy / "README.md").unlink()
    helm_docs(copy)
    generated = (copy / "README.md").read_text()
    assert generated == (CHART / "README.md").read_text(), (
        "charts/cardano-forge/README.md is out of date with values.yaml or README.md.gotmpl: "
        "run 'make chart-docs' and commit the result"
    )


def values_rows() -> list[list[str]]:
    text = (CHART / "README.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    header = rows.index("| Key | Type | Default | Description |")
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[header + 1 :]]


def test_every_value_has_a_description() -> None:
    rows = values_rows()
    assert len(rows) > 50
    undocumented = [row[0] for row in rows if not row[-1]]
    assert not undocumented, f"values without a '# --' comment in values.yaml: {undocumented}"


def leaf_paths(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        out: list[str] = []
        for key, value in node.items():
            out += leaf_paths(value, f"{prefix}.{key}" if prefix else key)
        return out
    return [prefix]


def test_every_value_is_in_the_table() -> None:
    documented = [row[0] for row in values_rows()]
    missing = [
        path
        for path in leaf_paths(values())
        if not any(path == doc or path.startswith(f"{doc}.") for doc in documented)
    ]
    assert not missing, f"values missing from the README's table: {missing}"


def schema_paths(schema: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        out.append(path)
        out += schema_paths(sub, path)
    return out


def test_every_value_is_in_the_schema() -> None:
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    known = set(schema_paths(schema))

    def covered(path: str) -> bool:
        parts = path.split(".")
        return any(".".join(parts[:n]) in known for n in range(len(parts), 0, -1))

    missing = [path for path in leaf_paths(values()) if path.split(".")[0] not in known]
    assert not missing, f"top-level values missing from values.schema.json: {missing}"
    uncovered = [path for path in leaf_paths(values()) if not covered(path)]
    assert not uncovered, f"values missing from values.schema.json: {uncovered}"


# --------------------------------------------------------------------------- ct lint's rules


def test_chart_yaml_matches_ct_chart_schema() -> None:
    doc = chart_yaml()
    for key in ("name", "home", "version", "apiVersion", "description"):
        assert isinstance(doc.get(key), str) and doc[key], f"Chart.yaml: {key} is required"
    for key in ("keywords", "sources"):
        assert all(isinstance(item, str) for item in doc[key]), key
    assert doc["maintainers"], "Chart.yaml: maintainers"
    for maintainer in doc["maintainers"]:
        assert isinstance(maintainer["name"], str)
        assert set(maintainer) <= {"name", "email", "url"}
    assert isinstance(doc["icon"], str) and doc["icon"].startswith("https://")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in doc["annotations"].items())
    assert SEMVER.match(doc["version"]), doc["version"]
    allowed = {
        "name", "home", "version", "apiVersion", "appVersion", "description", "keywords",
        "sources", "maintainers", "icon", "engine", "condition", "tags", "deprecated",
        "kubeVersion", "annotations", "type", "dependencies",
    }  # fmt: skip
    assert set(doc) <= allowed, f"Chart.yaml keys ct does not know: {set(doc) - allowed}"


@pytest.mark.parametrize("name", ["Chart.yaml", "values.yaml"])
def test_yamllint_with_ct_lintconf(name: str) -> None:
    conf = yamllint_config.YamlLintConfig(CT_LINTCONF)
    problems = [
        f"{name}:{p.line}:{p.column} {p.rule}: {p.desc}"
        for p in linter.run((CHART / name).read_text(), conf)
        if p.level == "error"
    ]
    assert not problems, "\n".join(problems)


CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


def test_there_are_ci_values_files() -> None:
    assert len(CI_VALUES) >= 2


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem)
def test_helm_lint_strict_per_ci_values(values_file: Path) -> None:
    result = subprocess.run(
        [tool("helm"), "lint", "--strict", str(CHART), "-f", str(values_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- metadata


def test_licence_is_apache_2_at_the_root_and_in_the_chart() -> None:
    root = REPO_ROOT / "LICENSE"
    assert filecmp.cmp(root, CHART / "LICENSE", shallow=False)
    text = root.read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert chart_yaml()["annotations"]["artifacthub.io/license"] == "Apache-2.0"


def changelog_entries(version: str) -> list[dict[str, str]]:
    text = (CHART / "CHANGELOG.md").read_text()
    section = text.split(f"## {version}\n", 1)[1].split("\n## ", 1)[0]
    entries = []
    for item in re.split(r"\n- ", "\n" + section.strip())[1:]:
        kind, _, description = item.partition(": ")
        entries.append({"kind": kind, "description": " ".join(description.split())})
    return entries


def test_changelog_has_this_version_and_matches_the_annotation() -> None:
    version = chart_yaml()["version"]
    text = (CHART / "CHANGELOG.md").read_text()
    assert re.findall(r"^## (\S+)$", text, re.M)[0] == version, (
        "the newest CHANGELOG.md section must be the chart's version"
    )
    entries = changelog_entries(version)
    assert entries
    kinds = {"added", "changed", "deprecated", "removed", "fixed", "security"}
    assert all(e["kind"] in kinds for e in entries), entries
    assert annotation("changes") == entries


def test_images_annotation_is_the_default_images() -> None:
    v = values()
    app = chart_yaml()["appVersion"]
    expected = {
        "cardano-node": f"{v['node']['image']['repository']}:{v['node']['image']['tag']}",
        "forge-manager": f"{v['forgeManager']['image']['repository']}:{app}",
        "health-endpoint": f"{v['healthEndpoint']['image']['repository']}:{app}",
    }
    mithril = v["node"].get("mithril")
    if mithril is not None:
        expected["mithril-client"] = f"{mithril['image']['repository']}:{mithril['image']['tag']}"
    assert {i["name"]: i["image"] for i in annotation("images")} == expected


def test_app_version_is_the_services_version() -> None:
    app = chart_yaml()["appVersion"]
    for service in ("forge-manager", "health-endpoint"):
        pyproject = (REPO_ROOT / "services" / service / "pyproject.toml").read_text()
        assert f'version = "{app}"' in pyproject, service


def test_crd_annotations_match_the_crd() -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    [entry] = annotation("crds")
    assert entry["name"] == crd["metadata"]["name"]
    assert entry["kind"] == crd["spec"]["names"]["kind"]
    assert entry["version"] in [v["name"] for v in crd["spec"]["versions"]]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for example in annotation("crdsExamples"):
        assert example["kind"] == entry["kind"]
        jsonschema.Draft4Validator(schema).validate(example)
