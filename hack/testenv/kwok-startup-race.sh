#!/usr/bin/env bash
# Reproduces the local cluster's start-up failure ("simulated nodes not ready after 2m0s: 0 of
# 6 nodes Ready"; kwok started no stage controller) and shows that kwok-stages.patch ends it.
#
#   hack/testenv/kwok-startup-race.sh        (about 6 minutes on 2 cores; not part of make test)
#
# The race (kwok-stages.patch says it in full): client-go records a list's resource version
# just after it hands the list on, and kwok's stage cache is keyed by that version. It is lost
# once in many starts; here it is lost every time, by building kwok against a copy of
# client-go whose reflector waits 300 ms before it records the version. Two such builds: one
# with kwok-uid.patch only (kwok's own stage cache; expected: no node Ready), one with both
# patches, as build-tools.sh builds it (expected: every node Ready). Needs the cluster's other
# binaries built (hack/testenv/build-tools.sh etcd kubernetes kwok).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"
log() { printf 'kwok-startup-race: %s\n' "$*" >&2; }

w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
kwok=$(cd /tmp && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
cgv=$(sed -n 's/^\tk8s.io\/client-go \(v[^ ]*\)$/\1/p' "$kwok/go.mod")
clientgo=$(cd /tmp && go mod download -json "k8s.io/client-go@$cgv" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
cp -r "$clientgo" "$w/client-go" && chmod -R u+w "$w/client-go"
reflector="$w/client-go/tools/cache/reflector.go"
n=$(grep -c '^	r.setLastSyncResourceVersion(resourceVersion)$' "$reflector")
[ "$n" = 2 ] || { log "client-go $cgv: expected the two places the reflector records a list's version, found $n"; exit 1; }
sed -i 's/^	r.setLastSyncResourceVersion(resourceVersion)$/	time.Sleep(300 * time.Millisecond)\n&/' "$reflector"

build() { # name patches...
  local name=$1; shift
  cp -r "$kwok" "$w/kwok-$name" && chmod -R u+w "$w/kwok-$name"
  (cd "$w/kwok-$name" && for p in "$@"; do git apply -p1 "$here/$p"; done &&
    echo "replace k8s.io/client-go => $w/client-go" >>go.mod &&
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$w/cache-$name/bin/kwok-$KWOK_BUILD/kwok" ./cmd/kwok)
  # The other binaries and kwok's manifests from the real cache.
  local b
  for b in "$KGPU_BIN"/*; do
    case $(basename "$b") in kwok-*) ;; *) ln -s "$b" "$w/cache-$name/bin/" ;; esac
  done
  cp -r "$KGPU_BIN/kwok-$KWOK_BUILD/crd" "$KGPU_BIN/kwok-$KWOK_BUILD/stage" "$w/cache-$name/bin/kwok-$KWOK_BUILD/"
}
[ -d "$KGPU_BIN/kwok-$KWOK_BUILD/stage" ] || { log "no kwok manifests in $KGPU_BIN: run hack/testenv/build-tools.sh etcd kubernetes kwok"; exit 2; }
log "building kwok twice against client-go $cgv with the version recorded late"
build upstream kwok-uid.patch
build patched kwok-uid.patch kwok-stages.patch
(cd "$root" && go build -o "$w/cluster" ./hack/devtools/cluster)

start() { # name: prints how many nodes were Ready
  (cd "$root" && KGPU_CACHE_DIR="$w/cache-$1" "$w/cluster" run --workload=false --simulate-agents=false -- \
    sh -c "kubectl get nodes --no-headers >'$w/$1.nodes'" >"$w/$1.log" 2>&1) || true
  # A start that fails keeps its directory for its logs; this one is known.
  local kept; kept=$(sed -n 's|.*the logs are kept in \(/tmp/kubectl-gpu-cluster-[0-9]*\)/logs.*|\1|p' "$w/$1.log")
  [ -z "$kept" ] || rm -rf "$kept"
  if [ -f "$w/$1.nodes" ]; then grep -c ' Ready ' "$w/$1.nodes" || true; else echo 0; fi
}
log "starting the cluster with kwok's own stage cache (expected: no node Ready, after a 2-minute wait)"
upstream=$(start upstream)
log "starting the cluster with kwok-stages.patch (expected: every node Ready)"
patched=$(start patched)
log "Ready nodes: $upstream without the patch, $patched with it"
if [ "$upstream" = 0 ] && [ "$patched" -gt 0 ] && grep -q 'nodes Ready' "$w/upstream.log"; then
  log "reproduced, and fixed by kwok-stages.patch"
  exit 0
fi
log "not as expected; the cluster's output:"
tail -n 20 "$w/upstream.log" "$w/patched.log" >&2
exit 1
