"""Unit tests of the test node's helpers: no cluster needed."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import pytest

from .testnode import (
    IP_RANGE_ENV,
    EnvError,
    IPPool,
    container_argv,
    decode_secret_data,
    expand,
    resolve_env,
)

POD: dict[str, Any] = {
    "metadata": {
        "name": "web-1",
        "namespace": "ns1",
        "uid": "u-1",
        "labels": {"app": "web"},
        "annotations": {"a": "b"},
    },
    "spec": {"serviceAccountName": "worker", "nodeName": "node-a"},
}
SECRETS = {("ns1", "creds"): {"user": "bob", "password": "pw"}}
CONFIGMAPS = {("ns1", "settings"): {"mode": "fast", "level": "3"}}


def lookup(store: Mapping[tuple[str, str], dict[str, str]]) -> Any:
    return lambda namespace, name: store.get((namespace, name))


def test_ip_pool_range_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IP_RANGE_ENV, "60-61")
    assert IPPool().allocate() == "127.0.60.1"
    monkeypatch.setenv(IP_RANGE_ENV, "9-3")
    with pytest.raises(ValueError, match="FIRST <= LAST"):
        IPPool()


def env_for(container: dict[str, Any]) -> dict[str, str]:
    return resolve_env(
        POD,
        container,
        pod_ip="127.0.1.7",
        node_name="fallback",
        secrets=lookup(SECRETS),
        configmaps=lookup(CONFIGMAPS),
    )


def test_ip_pool_gives_distinct_loopback_ips_and_reuses_late() -> None:
    pool = IPPool(first_octet3=1, last_octet3=1)
    first, second = pool.allocate(), pool.allocate()
    assert (first, second) == ("127.0.1.1", "127.0.1.2")
    pool.release(first)
    assert pool.allocate() == "127.0.1.3"  # released addresses go to the back
    assert pool.in_use() == {"127.0.1.2", "127.0.1.3"}
    for _ in range(251):
        pool.allocate()
    assert pool.allocate() == "127.0.1.1"
    with pytest.raises(RuntimeError):
        pool.allocate()


def test_expand_follows_kubernetes_rules() -> None:
    env = {"A": "x", "B": "y"}
    assert expand("$(A)-$(B)", env) == "x-y"
    assert expand("$$(A)", env) == "$(A)"
    assert expand("$(MISSING) $A", env) == "$(MISSING) $A"


def test_resolve_env_all_sources() -> None:
    env = env_for(
        {
            "envFrom": [
                {"secretRef": {"name": "creds"}, "prefix": "DB_"},
                {"configMapRef": {"name": "settings"}},
                {"configMapRef": {"name": "absent", "optional": True}},
            ],
            "env": [
                {"name": "PLAIN", "value": "v-$(mode)"},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {
                    "name": "LEVEL",
                    "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "level"}},
                },
                {
                    "name": "OPT",
                    "valueFrom": {
                        "secretKeyRef": {"name": "creds", "key": "nope", "optional": True}
                    },
                },
            ],
        }
    )
    assert env == {
        "DB_user": "bob",
        "DB_password": "pw",
        "mode": "fast",
        "level": "3",
        "PLAIN": "v-fast",
        "IP": "127.0.1.7",
        "NAME": "web-1",
        "NS": "ns1",
        "SA": "worker",
        "NODE": "node-a",
        "APP": "web",
        "PW": "pw",
        "LEVEL": "3",
    }


@pytest.mark.parametrize(
    "container",
    [
        {"envFrom": [{"secretRef": {"name": "absent"}}]},
        {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope"}}}]},
        {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}]},
    ],
)
def test_resolve_env_missing_references_fail(container: dict[str, Any]) -> None:
    with pytest.raises(EnvError, match="not found"):
        env_for(container)


def test_container_argv_expands_and_requires_command() -> None:
    argv = container_argv(
        {"command": ["python", "-m", "http.server"], "args": ["--bind", "$(IP)", "8080"]},
        {"IP": "127.0.1.9"},
    )
    assert argv == ["python", "-m", "http.server", "--bind", "127.0.1.9", "8080"]
    with pytest.raises(EnvError, match="no command"):
        container_argv({"name": "c", "args": ["x"]}, {})


def test_decode_secret_data() -> None:
    data = {"k": base64.b64encode(b"value").decode()}
    assert decode_secret_data(data) == {"k": "value"}
    assert decode_secret_data(None) == {}
