"""Running helm (and kubectl) from tests: render the chart, lint it, install it.

The helm binary comes from ``tools/k8s/build.sh`` (the ``kube_bin_dir`` fixture). That build
does not stamp helm with a Kubernetes version, so helm's offline default is v1.20 and the
chart's ``kubeVersion: >=1.30.0-0`` would refuse to render: offline commands pass
``--kube-version`` with the version the same build pinned (read from its stamp file).
Commands that talk to the API server use the server's real version.

Helm's cache/config/data directories are redirected to a temporary directory, so tests never
touch ``~/.cache/helm`` or ``~/.config/helm``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "slotfleet"
CRD_FILE = REPO_ROOT / "crds" / "queues.slotfleet.dev.yaml"
#: used when the build stamp cannot be read (keep in step with tools/k8s/build.sh)
FALLBACK_KUBE_VERSION = "1.37.2"

Json = dict[str, Any]


class CommandError(AssertionError):
    """A helm or kubectl command failed; the message carries its output."""


def pinned_kube_version(bin_dir: Path) -> str:
    """The Kubernetes version tools/k8s/build.sh built, from its stamp file."""
    try:
        stamp = (bin_dir / ".stamp").read_text()
    except FileNotFoundError:
        return FALLBACK_KUBE_VERSION
    match = re.search(r"kubernetes=v?([0-9][0-9.]*)", stamp)
    return match.group(1) if match else FALLBACK_KUBE_VERSION


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdin: str | None = None,
    timeout: float = 300,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv),
        input=stdin,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise CommandError(
            f"$ {' '.join(argv)}\nexit {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


@dataclass(frozen=True)
class Helm:
    """helm with isolated state directories, optionally bound to a kubeconfig."""

    binary: Path
    state_dir: Path
    kube_version: str
    kubeconfig: Path | None = None

    @classmethod
    def from_bin_dir(cls, bin_dir: Path, state_dir: Path) -> Helm:
        return cls(bin_dir / "helm", state_dir, pinned_kube_version(bin_dir))

    def bound_to(self, kubeconfig: Path) -> Helm:
        return Helm(self.binary, self.state_dir, self.kube_version, kubeconfig)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBE"))}
        env.update(
            HELM_CACHE_HOME=str(self.state_dir / "cache"),
            HELM_CONFIG_HOME=str(self.state_dir / "config"),
            HELM_DATA_HOME=str(self.state_dir / "data"),
        )
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def values_file(self, values: Mapping[str, Any]) -> Path:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / f"values-{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(yaml.safe_dump(dict(values)))
        return path

    def run(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run([str(self.binary), *args], env=self.env, timeout=timeout, check=check)

    def lint(
        self, values: Mapping[str, Any], *, strict: bool = True, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        args = [
            "lint",
            str(CHART),
            "--kube-version",
            self.kube_version,
            "-f",
            str(self.values_file(values)),
        ]
        return self.run(*args, *(["--strict"] if strict else []), check=check)

    def template_text(
        self,
        values: Mapping[str, Any],
        *,
        release: str = "sf",
        namespace: str = "slotfleet",
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--kube-version",
            self.kube_version,
            "-f",
            str(self.values_file(values)),
            check=check,
        )

    def template(
        self, values: Mapping[str, Any], *, release: str = "sf", namespace: str = "slotfleet"
    ) -> list[Json]:
        text = self.template_text(values, release=release, namespace=namespace).stdout
        return [doc for doc in yaml.safe_load_all(text) if doc]


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("kubectl")
    if binary is None:
        raise CommandError("kubectl is not on PATH; the chart's server-side checks need it")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    return run(
        [binary, "--kubeconfig", str(kubeconfig), *args],
        env=env,
        stdin=stdin,
        timeout=timeout,
        check=check,
    )


def find(docs: Sequence[Json], kind: str, name: str | None = None) -> list[Json]:
    """Rendered objects of ``kind`` (and ``name``)."""
    return [
        d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: Sequence[Json], kind: str, name: str | None = None) -> Json:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


#: What the operator must be allowed to do in a watched namespace:
#: (API group, resource, subresource, verbs). Checked against the rendered rules and, in
#: the kube tier, against the API server's authorizer for the chart's ServiceAccount.
OPERATOR_PERMISSIONS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("slotfleet.dev", "queues", "", ("get", "list", "watch", "patch", "update")),
    ("slotfleet.dev", "queues", "status", ("get", "list", "watch", "patch", "update")),
    ("slotfleet.dev", "queues", "scale", ("get", "list", "watch", "patch", "update")),
    *(
        (group, resource, "", ("get", "list", "watch", "create", "patch", "update", "delete"))
        for group, resource in (
            ("apps", "deployments"),
            ("", "serviceaccounts"),
            ("", "services"),
            ("rbac.authorization.k8s.io", "roles"),
            ("rbac.authorization.k8s.io", "rolebindings"),
            ("autoscaling", "horizontalpodautoscalers"),
            ("policy", "poddisruptionbudgets"),
            ("monitoring.coreos.com", "podmonitors"),
        )
    ),
    ("", "pods", "", ("get", "list", "watch", "patch", "delete")),
    ("", "secrets", "", ("get", "list", "watch")),
    ("", "events", "", ("create", "patch")),
    ("events.k8s.io", "events", "", ("create", "patch")),
)


def rules_allow(
    rules: Sequence[Json], group: str, resource: str, subresource: str, verb: str
) -> bool:
    """Whether RBAC ``rules`` grant ``verb`` on ``group/resource[/subresource]``."""
    full = f"{resource}/{subresource}" if subresource else resource
    for rule in rules:
        if group not in rule.get("apiGroups", []) and "*" not in rule.get("apiGroups", []):
            continue
        if full not in rule.get("resources", []) and "*" not in rule.get("resources", []):
            continue
        if verb in rule.get("verbs", []) or "*" in rule.get("verbs", []):
            return True
    return False
