# Pinned versions of everything the local cluster and the tests build. Sourced by hack/*.sh.
KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
# kwok as built here: its version with kwok-uid.patch (a stage acts only on the pod it was
# made for) and kwok-stages.patch (its cache of Stages follows every change) applied; see
# build_kwok in build-tools.sh.
KWOK_BUILD=$KWOK_VERSION-uid-stages
HELM_VERSION=${HELM_VERSION:-v3.22.0}
KREW_VERSION=${KREW_VERSION:-v0.5.0}
# Every containerd the conformance test (common/hostconfig/conformance_test.go) loads configs
# with: the newest 1.6 the module proxy serves, 1.7 before 1.7.17 (which still accepts a
# version 3 file, containerd PR #10165), 1.7.24 (Ubuntu 24.04's, the case of the version 3
# drop-in that stops it) and the newest 1.7, then the newest patch of each 2.x the proxy
# serves; 2.3 and 2.4 read config version 4. Override with a space-separated list.
CONTAINERD_VERSIONS=${CONTAINERD_VERSIONS:-"v1.6.38 v1.7.16 v1.7.24 v1.7.36 v2.0.14 v2.1.9 v2.2.10 v2.3.7 v2.4.2"}
KGPU_CACHE_DIR=${KGPU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-gpu}
KGPU_BIN=$KGPU_CACHE_DIR/bin
