"""What installing slotfleet brings: a small core, extras for PostgreSQL and Kubernetes,
and the license the metadata claims (``tests/integration/test_extras_install.py`` runs the
core alone)."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from slotfleet.cli.operator_cmd import liveness_url

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
#: What a SQLite client must not install.
HEAVY = {
    "kopf",
    "kubernetes",
    "psycopg",
    "psycopg-pool",
    "aiohttp",
    "starlette",
    "uvicorn",
}


def names(requirements: list[str]) -> set[str]:
    return {r.split(";")[0].split("[")[0].split(">")[0].split("<")[0].strip() for r in requirements}


def test_the_core_needs_no_database_driver_and_no_kubernetes() -> None:
    project = PYPROJECT["project"]
    assert names(project["dependencies"]) == {
        "pydantic",
        "annotated-types",
        "prometheus-client",
        "PyYAML",
    }
    extras = project["optional-dependencies"]
    assert names(extras["postgres"]) == {"psycopg", "psycopg-pool"}
    assert names(extras["operator"]) == {"kopf", "aiohttp", "kubernetes", "slotfleet"}
    assert "slotfleet[postgres]" in extras["operator"]
    assert names(extras["dashboard"]) == {"starlette", "uvicorn", "jinja2", "rich"}
    assert extras["all"] == ["slotfleet[postgres,operator,dashboard]"]
    assert "slotfleet[all]" in extras["dev"]
    # uvloop measured no gain (docs/decisions.md): not offered at all
    assert not any("uvloop" in r for reqs in extras.values() for r in reqs)
    # the installed metadata says the same (an extra marker on every heavy requirement)
    for requirement in metadata.requires("slotfleet") or []:
        if names([requirement]) & HEAVY:
            assert "extra ==" in requirement, requirement


def test_the_license_file_is_the_license_the_package_claims() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in (REPO / "Dockerfile").read_text()


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("http://10.1.2.3:8080/healthz", "http://10.1.2.3:8080/healthz"),
        ("http://fd00::5:8080/healthz", "http://[fd00::5]:8080/healthz"),
        ("http://[fd00::5]:8080/healthz", "http://[fd00::5]:8080/healthz"),
        ("http://0.0.0.0:8080/healthz", "http://0.0.0.0:8080/healthz"),
    ],
)
def test_the_chart_liveness_url_takes_an_ipv6_pod_address(given: str, url: str) -> None:
    """The chart binds kopf's liveness endpoint to $(POD_IP); IPv6 needs brackets."""
    assert liveness_url(given) == url
