"""Kubernetes test tier: a real control plane on loopback and a process-backed test node."""
