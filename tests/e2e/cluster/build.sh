#!/usr/bin/env bash
# Build the Kubernetes cluster the e2e suite runs on, from Go modules: the control
# plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler), one node's
# kubelet and kube-proxy, the CNI plugins in bin/cni, a CoreDNS with only the
# plugins a cluster DNS needs, and pause (compiled from the release's C source; the
# images that run it and the chart's Redis come from images.sh); also kubectl,
# kwok, helm, argocd-lua and promtool.
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
PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-v0.316.0}  # the Go module of Prometheus 3.16.0 (promtool)
CNI_VERSION=${CNI_VERSION:-v1.10.0}
COREDNS_VERSION=${COREDNS_VERSION:-v1.14.7}  # the last on client-go v0.35 (v1.15 needs v0.37)
CACHE=${TIDELINE_E2E_CACHE:-$HOME/.cache/tideline-e2e}/$K8S_VERSION
BIN=$CACHE/bin
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOPATH=${GOPATH:-$HOME/go}

KUBE=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
CNI=(bridge host-local loopback portmap)
ALL=(etcd "${KUBE[@]}" "${CNI[@]/#/cni/}" coredns pause kwok helm argocd-lua promtool)
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
# the module itself (its go.mod for the wrapper, build/pause for the pause binary)
k8s_module() {
  [ -z "${k8s_json:-}" ] || return 0
  if ! k8s_json=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION"); then
    echo "$k8s_json" | sed -n 's/.*"Error": "\(.*\)".*/go: \1/p' >&2  # go reports it in the JSON
    return 1
  fi
}
k8s_field() { echo "$k8s_json" | sed -n 's/.*"'"$1"'": "\(.*\)",*/\1/p'; }
tools_go() {
  cat <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubectl/pkg/cmd"
)
GO
}
if ! need "${KUBE[@]}"; then
  log "kubernetes $K8S_VERSION (staging modules at $staging_version)"
  k8s_module
fi
# A cache made before a command joined KUBE keeps its wrapper module: only a changed
# tools.go regenerates it (and `go mod tidy` adds the new commands' dependencies).
if ! need "${KUBE[@]}" && ! { [ -f "$src/go.mod" ] && [ "$(tools_go)" = "$(cat "$src/tools.go" 2>/dev/null)" ]; }; then
  log "wrapper module $src"
  gomod=$(k8s_field GoMod)
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
  tools_go > "$src/tools.go"
  # Fail fast, naming the module, if the proxy lacks one of the release's staging modules.
  for m in $(sed -n 's#^replace \(k8s.io/[^ ]*\) => .*#\1#p' "$src/go.mod" | grep -v /sample-); do
    go mod download "$m@$staging_version" 2>/dev/null || { echo "the module proxy has no $m@$staging_version: pick another K8S_VERSION" >&2; exit 1; }
  done
  (cd "$src" && go mod tidy -e >/dev/null 2>&1 || true)
fi
if ! need "${KUBE[@]}"; then
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  for cmd in "${KUBE[@]}"; do
    [ -x "$BIN/$cmd" ] && continue
    log "go build $cmd"
    (cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$BIN/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  done
fi

# --- the node's CNI plugins: a bridge network with host-local IPAM, loopback, and
# portmap for hostPort; `go install` takes several packages of one module@version
if ! need "${CNI[@]/#/cni/}"; then
  log "CNI plugins $CNI_VERSION (${CNI[*]})"
  cni_mod=github.com/containernetworking/plugins
  cni_pkgs=()
  for p in "${CNI[@]}"; do
    case $p in
    host-local) cni_pkgs+=("$cni_mod/plugins/ipam/$p@$CNI_VERSION") ;;
    portmap) cni_pkgs+=("$cni_mod/plugins/meta/$p@$CNI_VERSION") ;;
    *) cni_pkgs+=("$cni_mod/plugins/main/$p@$CNI_VERSION") ;;
    esac
  done
  mkdir -p "$BIN/cni"
  GOBIN=$BIN/cni go install -trimpath \
    -ldflags "-s -w -X $cni_mod/pkg/utils/buildversion.BuildVersion=$CNI_VERSION" "${cni_pkgs[@]}"
fi

# --- coredns: the cluster DNS with only the plugins it needs, as a library. CoreDNS's
# own main imports core/plugin, which links every plugin (cloud DNS SDKs included);
# dnsserver.Directives is the execution order, kept as in CoreDNS's plugin.cfg;
# prometheus (kubeadm's Corefile has it) is linked anyway, by cache and kubernetes.
if ! need coredns; then
  log "coredns $COREDNS_VERSION (errors health ready kubernetes cache loop reload loadbalance log prometheus)"
  csrc=$CACHE/src/coredns
  mkdir -p "$csrc"
  cat > "$csrc/go.mod" <<GOMOD
module tideline.dev/e2e/coredns

go 1.25.0
GOMOD
  cat > "$csrc/main.go" <<'GO'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func init() {
	dnsserver.Directives = []string{
		"reload", "ready", "health", "prometheus", "errors", "log", "loadbalance", "cache", "kubernetes", "loop",
	}
}

func main() { coremain.Run() }
GO
  (cd "$csrc" && rm -f go.sum && quiet go get "github.com/coredns/coredns@$COREDNS_VERSION" && quiet go mod tidy && \
    go build -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" -o "$BIN/coredns" .)
fi

# --- pause: the sandbox container's process, compiled from the release's own C source
# as build/pause/Makefile does (static, so its image needs nothing else)
if ! need pause; then
  command -v gcc >/dev/null || { echo "make e2e-bin: gcc (and libc6-dev, for a static libc) is needed to build pause" >&2; exit 1; }
  k8s_module
  pause_dir=$(k8s_field Dir)/build/pause
  pause_tag=$(sed -n 's/^TAG ?= *//p' "$pause_dir/Makefile")
  log "pause $pause_tag (gcc -static)"
  gcc -Os -Wall -Werror -static -DVERSION="v$pause_tag-tideline" -o "$BIN/pause.tmp" "$pause_dir/linux/pause.c"
  mv "$BIN/pause.tmp" "$BIN/pause"
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
if ! need promtool; then
  # the chart's alerting rules' tests (`promtool test rules`). Its service discoveries
  # (cloud SDKs) left out with Prometheus's remove_all_sd tag: promtool's Kubernetes one
  # stays, the rules' engine is all of it
  log "promtool $PROMETHEUS_VERSION (-tags remove_all_sd)"
  release=${PROMETHEUS_VERSION#v0.}  # v0.316.0 is Prometheus 3.16.0
  GOBIN=$BIN go install -trimpath -tags remove_all_sd \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=${release:0:1}.${release:1}" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
fi
if ! need argocd-lua || lua_stale; then
  # the Argo CD health check's and actions' tests, in the Lua VM Argo CD runs them in (gopher-lua)
  log "argocd-lua (gopher-lua)"
  (cd "$LUA_SRC" && go build -trimpath -ldflags "-s -w" -o "$BIN/argocd-lua" .)
fi
log "control plane built in $(($(date +%s) - start))s"
echo "$BIN"
