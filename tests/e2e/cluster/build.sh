#!/usr/bin/env bash
# Build the Kubernetes control plane the e2e suite runs on, from Go modules.
#
# No registry ships kube-apiserver as a binary, but the Go module proxy serves
# k8s.io/kubernetes. `go install k8s.io/kubernetes/cmd/...@vX` fails because
# that module's go.mod replaces its staging modules with local paths; a small
# wrapper module that requires k8s.io/kubernetes and replaces each staging
# module with its published v0.X.Y builds fine. Binaries are cached under
# ~/.cache/tideline-e2e/<version>/bin, so later runs skip all of this.
#
# `make e2e-bin` runs it before pytest starts (a cold build takes 7-17 minutes
# on 2 cores, far past a test's timeout); the suite only finds the binaries,
# with `build.sh --find`, which builds nothing and fails naming what is missing.
#
# Prints the directory holding the binaries on its last line.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.35.4}
ETCD_VERSION=${ETCD_VERSION:-v3.5.21}
KWOK_VERSION=${KWOK_VERSION:-v0.7.0}
HELM_VERSION=${HELM_VERSION:-v3.17.4}
CACHE=${TIDELINE_E2E_CACHE:-$HOME/.cache/tideline-e2e}/$K8S_VERSION
BIN=$CACHE/bin
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOPATH=${GOPATH:-$HOME/go}

ALL=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm argocd-lua)
need() { for b in "$@"; do [ -x "$BIN/$b" ] || return 1; done; }
LUA_SRC=$(cd "$(dirname "$0")" && pwd)/argocd-lua
# argocd-lua is ours: rebuilt when its source is newer than the binary
lua_stale() { [ "$LUA_SRC/main.go" -nt "$BIN/argocd-lua" ] || [ "$LUA_SRC/go.mod" -nt "$BIN/argocd-lua" ]; }
if need "${ALL[@]}" && { [ "${1:-}" = --find ] || ! lua_stale; }; then
  echo "$BIN"
  exit 0
fi
if [ "${1:-}" = --find ]; then
  missing=(); for b in "${ALL[@]}"; do [ -x "$BIN/$b" ] || missing+=("$b"); done
  echo "the e2e control plane is not built (missing in $BIN: ${missing[*]}): run \`make e2e-bin\`" >&2
  exit 1
fi
command -v go >/dev/null || { echo "make e2e-bin: go (>= 1.24) is needed to build the e2e control plane" >&2; exit 1; }
mkdir -p "$BIN" "$CACHE/src"
start=$(date +%s)
step="start"
log() { step="$*"; echo "[build $(($(date +%s) - start))s] $*" >&2; }
# Any failing command names the step it broke and the way to retry, once.
trap 'echo "make e2e-bin: building the e2e control plane failed at: $step (after $(($(date +%s) - start))s; output above)" >&2' ERR
# quiet CMD...: run CMD with its output kept aside, shown only if it fails.
quiet() {
  local out
  out=$(mktemp)
  if ! "$@" >"$out" 2>&1; then tail -n 40 "$out" >&2; rm -f "$out"; return 1; fi
  rm -f "$out"
}

# --- kubernetes: wrapper module with the staging replaces read from the release's go.mod
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
patch=${K8S_VERSION##*.}
staging_version="v0.$minor.$patch"
src=$CACHE/src/kubernetes
mkdir -p "$src"
if ! need kube-apiserver kube-controller-manager kube-scheduler kubectl; then
  log "kubernetes $K8S_VERSION (staging modules at $staging_version)"
  if ! json=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION"); then
    echo "$json" | sed -n 's/.*"Error": "\(.*\)".*/go: \1/p' >&2  # go reports it in the JSON
    false
  fi
  gomod=$(echo "$json" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  goversion=$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gomod" | head -1)
  {
    echo "module tideline.dev/e2e/kubernetes"
    echo
    echo "go $goversion"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    sed -n 's#^\s*\(k8s.io/[a-z0-9./-]*\) => ./staging/src/.*#replace \1 => \1 '"$staging_version"'#p' "$gomod"
  } > "$src/go.mod"
  cat > "$src/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubectl/pkg/cmd"
)
GO
  # Fail fast, naming the module, if the proxy lacks one of the release's staging modules.
  for m in $(sed -n 's#^replace \(k8s.io/[^ ]*\) => .*#\1#p' "$src/go.mod" | grep -v /sample-); do
    go mod download "$m@$staging_version" 2>/dev/null || { echo "the module proxy has no $m@$staging_version: pick another K8S_VERSION" >&2; exit 1; }
  done
  (cd "$src" && go mod tidy -e >/dev/null 2>&1 || true)
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [ -x "$BIN/$cmd" ] && continue
    log "go build $cmd"
    (cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$BIN/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  done
fi

# --- etcd: a wrapper that go-gets the server module
if ! need etcd; then
  log "etcd $ETCD_VERSION"
  esrc=$CACHE/src/etcd
  mkdir -p "$esrc"
  cat > "$esrc/go.mod" <<GOMOD
module tideline.dev/e2e/etcd

go 1.23
GOMOD
  cat > "$esrc/main.go" <<'GO'
package main

import "go.etcd.io/etcd/server/v3/etcdmain"
import "os"

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$esrc" && quiet go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" && quiet go mod tidy && \
    go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" .)
fi

if ! need kwok; then
  log "kwok $KWOK_VERSION"
  GOBIN=$BIN go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
fi
if ! need helm; then
  log "helm $HELM_VERSION"
  GOBIN=$BIN go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
if ! need argocd-lua || lua_stale; then
  # the Argo CD health check's tests, in the Lua VM Argo CD runs them in (gopher-lua)
  log "argocd-lua (gopher-lua)"
  (cd "$LUA_SRC" && go build -trimpath -ldflags "-s -w" -o "$BIN/argocd-lua" .)
fi
log "control plane built in $(($(date +%s) - start))s"
echo "$BIN"
