"""What a namespace looks like when a kube test gives up waiting: a short, readable report.

The per-process log tails that conftest attaches to a failure are long and cut by CI output
limits; this report is small enough to go into the assertion message itself.
"""

from __future__ import annotations

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .testnode import TestNode


def namespace_report(api: client.ApiClient, namespace: str, node: TestNode | None = None) -> str:
    core = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)
    lines = [f"--- namespace {namespace} ---"]
    try:
        for d in apps.list_namespaced_deployment(namespace).items:
            meta, s = d.metadata or client.V1ObjectMeta(), d.status or client.V1DeploymentStatus()
            conds = [f"{c.type}={c.status}({c.reason})" for c in s.conditions or []]
            lines.append(
                f"deployment {meta.name}: gen {meta.generation} observed "
                f"{s.observed_generation} replicas {s.replicas} ready {s.ready_replicas} "
                f"available {s.available_replicas} {' '.join(conds)}"
            )
        for p in core.list_namespaced_pod(namespace).items:
            meta, st = p.metadata or client.V1ObjectMeta(), p.status or client.V1PodStatus()
            node_name = p.spec.node_name if p.spec else None
            conds = [f"{c.type}={c.status}" for c in st.conditions or []]
            containers = [
                f"{c.name}:ready={c.ready},restarts={c.restart_count}"
                for c in st.container_statuses or []
            ]
            lines.append(
                f"pod {meta.name}: node {node_name} phase {st.phase} ip {st.pod_ip} "
                f"{' '.join(conds)} {' '.join(containers)}"
            )
        events = sorted(
            core.list_namespaced_event(namespace).items,
            key=lambda e: str(e.last_timestamp or e.event_time or ""),
        )
        for e in events[-20:]:
            lines.append(
                f"event {e.last_timestamp or e.event_time} {e.involved_object.kind}/"
                f"{e.involved_object.name} {e.reason}: {e.message}"
            )
    except ApiException as exc:
        lines.append(f"(could not read the namespace: {exc.status} {exc.reason})")
    if node is not None:
        lines.append("--- test node ---")
        lines += [e for e in node.events if f" {namespace}/" in e][-20:]
        lines += node.errors[-10:]
        for log in sorted(node.work_dir.glob(f"{namespace}/*/*.log")):
            lines.append(f"--- {log.relative_to(node.work_dir)} (last 30 lines) ---")
            lines += log.read_text(errors="replace").splitlines()[-30:]
    return "\n".join(lines)
