#!/usr/bin/env bash
# Sourced by tools/k8s/build.sh and tools/k8s/build-node.sh: the -ldflags every
# k8s.io/kubernetes command is built with, so kube-apiserver and the kubelet report the
# same version (/version, `kubectl version`, the Node's kubeletVersion) and share the Go
# build cache.
#
# Usage: kube_ldflags v1.X.Y BUILD_DATE   (prints the flags)
kube_ldflags() {
  local version="$1" build_date="$2" minor flags
  minor="$(echo "$version" | sed -E 's/^v1\.([0-9]+)\..*/\1/')"
  flags="-s -w"
  flags+=" -X k8s.io/component-base/version.gitVersion=${version}"
  flags+=" -X k8s.io/component-base/version.gitMajor=1"
  flags+=" -X k8s.io/component-base/version.gitMinor=${minor}"
  flags+=" -X k8s.io/component-base/version.gitCommit=0000000000000000000000000000000000000000"
  flags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  flags+=" -X k8s.io/component-base/version.buildDate=${build_date}"
  # client-go has its own copy of the version variables (used in the user agent)
  flags+=" -X k8s.io/client-go/pkg/version.gitVersion=${version}"
  flags+=" -X k8s.io/client-go/pkg/version.gitMajor=1"
  flags+=" -X k8s.io/client-go/pkg/version.gitMinor=${minor}"
  printf '%s\n' "$flags"
}
