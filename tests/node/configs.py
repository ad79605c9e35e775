"""The real node's configuration as data: the CNI network, containerd's config, the
kubelet's and kube-proxy's configuration files and the DNS server's arguments, all from
the network facts below. Pure functions, no I/O: ``tests.node.realnode`` writes them and
starts the daemons.

Why each unusual setting is there (facts of this machine kind, from
shared/notes/real-node.md): the kernel mounts cgroup v1, so the kubelet needs
``failCgroupV1: false`` and the ``cgroupfs`` driver; the sandbox lacks CAP_SYS_RESOURCE,
so containerd must not ask for a negative ``oom_score_adj``; kube-proxy is kept off the
conntrack sysctls and ``route_localnet``; the bridge plugin must not turn on forwarding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.kube.controlplane import SERVICE_CLUSTER_IP_RANGE

Json = dict[str, Any]

NODE_NAME = "slotfleet-real-node"
BRIDGE = "sfnode0"
POD_CIDR = "10.244.0.0/24"
GATEWAY = "10.244.0.1"
#: The ``kubernetes`` Service's ClusterIP: the first address of the service range.
KUBERNETES_SERVICE_IP = SERVICE_CLUSTER_IP_RANGE.rsplit(".", 1)[0] + ".1"
CLUSTER_DOMAIN = "cluster.local"
CGROUP_ROOT = "slotfleet-node"
KUBELET_PORT = 10250
CNI_BIN_DIR = Path("/usr/lib/cni")


def cni_conflist(ipam_dir: Path) -> Json:
    """``bridge`` + ``host-local`` on :data:`POD_CIDR`. The bridge already carries the
    gateway (made first), so the plugin is no gateway: pods route through it and IP
    forwarding stays off (nothing a pod sends leaves the machine)."""
    return {
        "cniVersion": "0.4.0",
        "name": "slotfleet-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0", "gw": GATEWAY}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "loopback"},
        ],
    }


def containerd_toml(base: Path, root: Path, socket: Path, pause_image: str, cni_conf: Path) -> str:
    """containerd 1.6's config: state, sockets and ``opt`` under ``base``, its root (the
    images) at ``root``; the CRI plugin with runc (cgroupfs), the CNI network and the
    pause image built here."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{root}"
state = "{base / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"
[{cri}]
  sandbox_image = "{pause_image}"
  # the sandbox lacks CAP_SYS_RESOURCE: a negative oom_score_adj is refused
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni_conf}"
"""


def dnsmasq_argv(binary: str) -> list[str]:
    """The cluster DNS on the gateway: ``kubernetes.default.svc.cluster.local`` is the
    ``kubernetes`` Service (kopf connects to that name), the rest of ``cluster.local``
    is NXDOMAIN, and nothing is forwarded anywhere."""
    return [
        binary,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--pid-file=",
        "--log-facility=-",
        f"--listen-address={GATEWAY}",
        "--bind-interfaces",
        f"--local=/{CLUSTER_DOMAIN}/",
        f"--address=/kubernetes.default.svc.{CLUSTER_DOMAIN}/{KUBERNETES_SERVICE_IP}",
    ]


def kubelet_config(runtime_socket: Path, pod_logs: Path) -> Json:
    """KubeletConfiguration: cgroup v1 with cgroupfs under :data:`CGROUP_ROOT`, the API
    on the gateway (anonymous, so the API server can reach logs and exec), the cluster
    DNS, logs in the work dir, eviction only on real exhaustion (other test runs share
    the disk and memory), no image garbage collection."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "containerRuntimeEndpoint": f"unix://{runtime_socket}",
        "address": GATEWAY,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzPort": 0,
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDNS": [GATEWAY],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "",
        "podLogsDir": str(pod_logs),
        "failSwapOn": False,
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "registerNode": True,
        "syncFrequency": "5s",
        "fileCheckFrequency": "5s",
    }


def kube_proxy_config(kubeconfig: str) -> Json:
    """KubeProxyConfiguration: iptables mode for :data:`POD_CIDR`, listening and serving
    node ports on the gateway only (so ``route_localnet`` is left alone), the conntrack
    sysctls left as they are."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": kubeconfig},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "bindAddress": GATEWAY,
        "healthzBindAddress": f"{GATEWAY}:10256",
        "metricsBindAddress": f"{GATEWAY}:10249",
        "nodePortAddresses": [f"{GATEWAY}/32"],
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }
