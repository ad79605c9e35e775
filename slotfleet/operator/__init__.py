"""The Kubernetes operator: Queue resources in, worker fleets out.

``crd`` generates the CRD from the models; ``builders`` and ``status`` are pure; ``kube``
talks to the API server; ``reconciler`` decides; ``handlers`` and ``main`` wire it to
kopf. Nothing below this package imports it (import-linter enforces that).
"""
