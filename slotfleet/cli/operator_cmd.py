"""``slotfleet operator``: run the Kubernetes operator that turns Queues into fleets.

Flags::

    --namespace NS        watch Queues in NS (repeatable); default: the pod's namespace
                          ($POD_NAMESPACE) when neither this nor --all-namespaces is given
    --all-namespaces      watch every namespace (needs cluster-wide RBAC)
    --standalone          run without kopf peering (the default)
    --peering NAME        coordinate with other operators through KopfPeering NAME
    --leader-elect        run only while holding a Lease (several replicas take turns)
    --lease-name NAME     the Lease (default slotfleet-operator)
    --lease-namespace NS  its namespace (default $POD_NAMESPACE, else the one --namespace)
    --lease-duration S    seconds a lease lasts; renewed every third of it (default 15)
    --liveness URL        serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz
    --interval SECONDS    how often each Queue's status is refreshed (default 2)
    --store-timeout S     seconds a store read may take (default 5)
    --metrics-host H      address of the Queue gauges' /metrics (default 127.0.0.1)
    --metrics-port P      serve them on P (default: not served)
    --verbose / --debug   more logging
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from slotfleet.cli.common import guarded, port_arg, require_extra
from slotfleet.models import InvalidSettingsError

if TYPE_CHECKING:
    from slotfleet.operator.election import ElectionOptions


def run(args: argparse.Namespace) -> int:
    try:  # heavy, and optional (slotfleet[operator]): only this command needs them
        import kopf

        from slotfleet.operator.main import OperatorOptions, run_operator
    except ModuleNotFoundError as exc:
        require_extra(exc, "operator", "slotfleet operator")
    from slotfleet.health_server import MetricsServerConfig

    election = election_options(args)

    kopf.configure(verbose=args.verbose, debug=args.debug)
    if args.all_namespaces:
        namespaces: tuple[str, ...] | None = None
    elif args.namespace:
        namespaces = tuple(args.namespace)
    else:
        own = os.environ.get("POD_NAMESPACE", "").strip()
        namespaces = (own,) if own else None
    run_operator(
        OperatorOptions(
            namespaces=namespaces,
            liveness=liveness_url(args.liveness) if args.liveness else None,
            peering=None if args.standalone else args.peering,
            interval=args.interval,
            store_timeout=args.store_timeout,
            metrics=MetricsServerConfig(args.metrics_host, args.metrics_port)
            if args.metrics_port
            else None,
            election=election,
        )
    )
    return 0


def election_options(args: argparse.Namespace) -> ElectionOptions | None:
    """``--leader-elect`` and its settings, or ``None`` without it."""
    if not args.leader_elect:
        return None
    if args.peering:
        raise InvalidSettingsError(
            "--leader-elect runs kopf standalone under the Lease: drop --peering"
        )
    from slotfleet.operator.election import ElectionOptions
    from slotfleet.operator.leader import ElectionTimings

    namespace = args.lease_namespace or os.environ.get("POD_NAMESPACE", "").strip()
    if not namespace and len(args.namespace) == 1:
        namespace = args.namespace[0]
    if not namespace:
        raise InvalidSettingsError(
            "--leader-elect needs --lease-namespace (or $POD_NAMESPACE, or one --namespace)"
        )
    return ElectionOptions(
        namespace=namespace,
        name=args.lease_name,
        timings=ElectionTimings(lease_duration=args.lease_duration),
    )


def liveness_url(text: str) -> str:
    """``--liveness`` as kopf needs it: an IPv6 address put in by the kubelet
    (``http://$(POD_IP):8080/healthz`` in the chart) gets the brackets a URL needs."""
    scheme, sep, rest = text.partition("://")
    hostport, slash, path = rest.partition("/")
    if not sep or hostport.startswith("[") or hostport.count(":") < 2:
        return text
    host, _, port = hostport.rpartition(":")
    if not port.isdigit():  # an address without a port
        host, port = hostport, ""
    return f"{scheme}://[{host}]{':' + port if port else ''}{slash}{path}"


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _at_least_one(text: str) -> float:
    value = float(text)
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (seconds), not {text}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator (Queue resources -> worker fleets)",
        description="Run the Kubernetes operator that turns Queue resources into worker fleets.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch Queues in NS (repeatable; default $POD_NAMESPACE, else all namespaces)",
    )
    where.add_argument(
        "--all-namespaces", action="store_true", help="watch Queues in every namespace"
    )
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument(
        "--standalone", action="store_true", help="run without kopf peering (default)"
    )
    peering.add_argument(
        "--peering", default=None, metavar="NAME", help="kopf peering object to coordinate through"
    )
    elect = parser.add_argument_group("leader election (two or more replicas)")
    elect.add_argument(
        "--leader-elect",
        action="store_true",
        help="run only while holding a coordination.k8s.io Lease; other replicas wait",
    )
    elect.add_argument(
        "--lease-name", default="slotfleet-operator", metavar="NAME", help="the Lease's name"
    )
    elect.add_argument(
        "--lease-namespace",
        default="",
        metavar="NS",
        help="the Lease's namespace (default $POD_NAMESPACE, else the one --namespace)",
    )
    elect.add_argument(
        "--lease-duration",
        type=_at_least_one,
        default=15.0,
        metavar="SECONDS",
        help="seconds before a silent leader's lease is taken over; renewed every third "
        "of it, given up after two thirds (default 15)",
    )
    parser.add_argument(
        "--liveness",
        default=None,
        metavar="URL",
        help="serve a liveness endpoint, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--interval",
        type=_positive,
        default=2.0,
        metavar="SECONDS",
        help="seconds between status refreshes of each Queue (default 2)",
    )
    parser.add_argument(
        "--store-timeout",
        type=_positive,
        default=5.0,
        metavar="SECONDS",
        help="seconds a job-store read may take before it counts as unreachable (default 5)",
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address to serve the Queue gauges' /metrics on (in a pod: its IP)",
    )
    parser.add_argument(
        "--metrics-port",
        type=port_arg,
        default=0,
        help="port of /metrics with backlog and desired replicas per Queue (default: off)",
    )
    parser.add_argument("--verbose", action="store_true", help="log more")
    parser.add_argument("--debug", action="store_true", help="log everything (kopf internals)")
    parser.set_defaults(handler=guarded(run))
