#!/usr/bin/env bash
# Builds the local cluster's binaries from the Go module proxy at pinned versions into a
# cache outside the repository, keyed by version. Built once per machine; later runs only
# check that the files are there.
#
#   hack/testenv/build-tools.sh [kubernetes] [etcd] [kwok] [helm] [krew] [containerd] [sysroot] [debian-root]   (default: all)
#
# Prints nothing but progress on stderr; the cache directory is $KGPU_CACHE_DIR
# (default ${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-gpu).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"

log() { printf 'build-tools: %s\n' "$*" >&2; }

# build_kubernetes makes a wrapper module that requires k8s.io/kubernetes and replaces every
# staging module with the same-named published module (k8s.io/kubernetes' own go.mod points
# them at ./staging, which is why it cannot be `go install`ed).
build_kubernetes() {
  local out="$KGPU_BIN/kubernetes-$KUBE_VERSION"
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubelet)
  local missing=0 b
  for b in "${want[@]}"; do [ -x "$out/$b" ] || missing=1; done
  [ $missing = 0 ] && return 0
  log "building kubernetes $KUBE_VERSION (cold: about 10 minutes on 2 cores)"
  local w; w=$(mktemp -d); trap 'rm -rf "$w"' RETURN
  (cd "$w" && go mod init kgpu-kube-wrapper >/dev/null 2>&1)
  local gomod; gomod=$(cd "$w" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  local stage="v0.${KUBE_VERSION#v1.}"
  {
    echo "module kgpu-kube-wrapper"
    echo "go $(sed -n 's/^go //p' "$gomod")"
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo "replace ("
    sed -n '/^replace (/,/^)/p' "$gomod" | awk '/=> \.\/staging/ {print "\t" $1 " => " $1 " '"$stage"'"}'
    echo ")"
  } >"$w/go.mod"
  cat >"$w/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
  (cd "$w" && GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$w" && GOFLAGS=-mod=mod go get "k8s.io/kubernetes@$KUBE_VERSION" >/dev/null)
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local ld="-s -w"
  local p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  mkdir -p "$out.tmp"
  (cd "$w" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ld" -o "$out.tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet)
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# build_etcd: etcd's go.mod has replace directives, so `go install` is refused; a small module
# that requires the server module builds it.
build_etcd() {
  local out="$KGPU_BIN/etcd-$ETCD_VERSION"
  [ -x "$out/etcd" ] && return 0
  log "building etcd $ETCD_VERSION"
  local w; w=$(mktemp -d); trap 'rm -rf "$w"' RETURN
  (cd "$w" && go mod init kgpu-etcd-wrapper >/dev/null 2>&1 &&
    GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 &&
    mkdir -p "$out.tmp" &&
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# go_install_to builds a module's command that `go install` accepts into $KGPU_BIN/<name>-<version>.
go_install_to() {
  local name=$1 version=$2 pkg=$3
  local out="$KGPU_BIN/$name-$version"
  [ -x "$out/$name" ] && return 0
  log "building $name $version"
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "$pkg@$version"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# build_krew: `go install krew@version` is refused (the proxy serves v0.5.0 itself but not the
# module's version list that go install reads for deprecation notices); a wrapper module
# that requires it builds it.
build_krew() {
  local out="$KGPU_BIN/krew-$KREW_VERSION"
  [ -x "$out/krew" ] && return 0
  log "building krew $KREW_VERSION"
  local w; w=$(mktemp -d); trap 'rm -rf "$w"' RETURN
  printf 'module kgpu-krew-wrapper\n\ngo 1.26\n\nrequire sigs.k8s.io/krew %s\n' "$KREW_VERSION" >"$w/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "sigs.k8s.io/krew/cmd/krew"\n' >"$w/tools.go"
  mkdir -p "$out.tmp"
  (cd "$w" && GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 &&
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$out.tmp/krew" sigs.k8s.io/krew/cmd/krew)
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# build_kwok builds kwok from its module with two changes:
# * kwok-uid.patch: a stage job deletes or patches only the pod it was made for (a UID
#   precondition). Without it a job still queued for a deleted pod acts on the next pod of
#   the same name, which a command that names its pods by node (verify) makes on every run: in
#   the 1000-node benchmark the guard refused 1,679 such deletions of a newer verify pod
#   (docs/testing.md).
# * kwok-stages.patch: kwok's cache of its Stages is invalidated by every change to them.
#   Without it kwok now and then serves itself no stages from its start on, and no node ever
#   becomes Ready (the local cluster's start-up failure, "0 of 6 nodes Ready";
#   kwok-startup-race.sh reproduces it).
build_kwok() {
  local out="$KGPU_BIN/kwok-$KWOK_BUILD"
  [ -x "$out/kwok" ] && return 0
  log "building kwok $KWOK_BUILD"
  local dir; dir=$(kwok_module)
  local w; w=$(mktemp -d); trap 'rm -rf "$w"' RETURN
  cp -r "$dir" "$w/kwok" && chmod -R u+w "$w/kwok"
  (cd "$w/kwok" && git apply -p1 "$here/kwok-uid.patch" "$here/kwok-stages.patch")
  mkdir -p "$out.tmp"
  (cd "$w/kwok" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$out.tmp/kwok" ./cmd/kwok)
  rm -rf "$out" && mv "$out.tmp" "$out"
}

kwok_module() {
  (cd /tmp && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
}

# kwok_manifests copies kwok's CRDs and default stages beside its binary: the local cluster
# applies them before kwok starts.
kwok_manifests() {
  local out="$KGPU_BIN/kwok-$KWOK_BUILD"
  [ -d "$out/crd" ] && [ -d "$out/stage" ] && return 0
  local dir; dir=$(kwok_module)
  rm -rf "$out/crd" "$out/stage"
  cp -r "$dir/kustomize/crd/bases" "$out/crd"
  cp -r "$dir/kustomize/stage" "$out/stage"
  chmod -R u+w "$out/crd" "$out/stage"
}

# build_containerd builds the containerd daemon at each of CONTAINERD_VERSIONS into
# $KGPU_BIN/containerd-<version>/containerd, named as its release builds name themselves (the
# version package set by -ldflags). Static (CGO off; the btrfs, devmapper and zfs
# snapshotters left out, which no config test reaches): the conformance test runs it inside
# fake host roots with chroot. 1.x is the v1 module path, 2.x the /v2 one. A wrapper module
# requires it and copies its replace directives (1.6's go.mod has some, so `go install`
# refuses it), as build_kubernetes does.
build_containerd() {
  local v mod out w gomod
  for v in $CONTAINERD_VERSIONS; do
    out="$KGPU_BIN/containerd-$v"
    [ -x "$out/containerd" ] && continue
    mod=github.com/containerd/containerd
    case $v in v2.*) mod=$mod/v2 ;; esac
    log "building containerd $v (cold: about 2 minutes each on 2 cores)"
    w=$(mktemp -d)
    (cd "$w" && go mod init kgpu-containerd-wrapper >/dev/null 2>&1)
    gomod=$(cd "$w" && go mod download -json "$mod@$v" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
    {
      echo "module kgpu-containerd-wrapper"
      echo "go $(sed -n 's/^go //p' "$gomod")"
      echo "require $mod $v"
      sed -n '/^replace (/,/^)/p; /^replace [^(]/p' "$gomod" | { grep -v '=> \.' || true; }
    } >"$w/go.mod"
    printf '//go:build tools\n\npackage tools\n\nimport _ "%s/cmd/containerd"\n' "$mod" >"$w/tools.go"
    mkdir -p "$out.tmp"
    if ! (cd "$w" && GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 &&
      CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -tags "no_btrfs no_devmapper no_zfs" \
        -ldflags "-s -w -X $mod/version.Version=${v#v} -X $mod/version.Revision=kubectl-gpu-test" \
        -o "$out.tmp/containerd" "$mod/cmd/containerd"); then
      rm -rf "$w" "$out.tmp"; log "containerd $v did not build"; return 1
    fi
    rm -rf "$w" "$out" && mv "$out.tmp" "$out"
  done
}

mkdir -p "$KGPU_BIN"
what=("$@"); [ ${#what[@]} -gt 0 ] || what=(etcd kwok helm krew kubernetes containerd sysroot debian-root)
for t in "${what[@]}"; do
  case $t in
    kubernetes) build_kubernetes ;;
    etcd) build_etcd ;;
    kwok) build_kwok; kwok_manifests ;;
    helm) go_install_to helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm ;;
    krew) build_krew ;;
    containerd) build_containerd ;;
    sysroot) # Debian's run-time files for the node-agent image (make image); best effort
      for a in amd64 arm64; do "$here/../release/agent-sysroot.sh" "$a" >/dev/null || log "no $a files for the agent image: its test will skip"; done ;;
    debian-root) # a Debian root where the package-install tests run the real apt-get; best effort
      "$here/debian-root.sh" >/dev/null || log "no Debian root: the package-install tests will skip" ;;
    *) log "unknown tool $t"; exit 2 ;;
  esac
done
