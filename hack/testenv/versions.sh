# Pinned versions of everything the local cluster and the tests build. Sourced by hack/*.sh.
KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
# kwok as built here: its version with kwok-uid.patch applied (a stage acts only on the pod it
# was made for; see build_kwok in build-tools.sh).
KWOK_BUILD=$KWOK_VERSION-uid
HELM_VERSION=${HELM_VERSION:-v3.22.0}
KREW_VERSION=${KREW_VERSION:-v0.5.0}
KGPU_CACHE_DIR=${KGPU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-gpu}
KGPU_BIN=$KGPU_CACHE_DIR/bin
