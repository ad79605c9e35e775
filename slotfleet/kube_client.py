"""The one way slotfleet reaches the Kubernetes API: in-cluster first, then KUBECONFIG.

Shared by the operator and by worker pods watching their own Queue (the same order kopf
uses). It imports nothing else from slotfleet, so any layer may use it.
"""

from __future__ import annotations

from kubernetes import client, config


def load_api_client() -> client.ApiClient:
    """An API client from the in-cluster service account, else from ``KUBECONFIG``."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)
