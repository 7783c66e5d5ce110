#!/usr/bin/env bash
# The two images the e2e cluster's node runs, as archives its containerd imports with
# `ctr -n k8s.io images import <tar>` (no registry is reachable from the tests):
#
#   pause.tar  tideline.dev/e2e/pause:3.10  the pod sandbox (containerd's sandbox_image):
#              FROM scratch, the static pause build.sh compiles (the release's
#              build/pause, 3.10.1), user 65535
#   redis.tar  tideline.dev/e2e/redis:7     the chart's bundled Redis: Debian bookworm's
#              redis-server with ENTRYPOINT ["redis-server"], so the chart's
#              `args: [--dir, /data, ...]` work as with the official image; user 999
#
# Built without a daemon, as image/build.sh builds the runtime image: a root made by
# mmdebstrap from the mirror this host's apt uses, committed with buildah and pushed
# as a docker-archive. An image is rebuilt only when what goes into it changed (a
# hash of this script and its inputs, kept next to the archive).
#
# `make e2e-bin` runs it after build.sh (which compiles pause). `images.sh --find`
# builds nothing and fails naming what is missing. Prints the directory holding the
# archives on its last line.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.35.4}
CACHE=${TIDELINE_E2E_CACHE:-$HOME/.cache/tideline-e2e}/$K8S_VERSION
BIN=$CACHE/bin
IMAGES=$CACHE/images
PAUSE_IMAGE=tideline.dev/e2e/pause:3.10
REDIS_IMAGE=tideline.dev/e2e/redis:7

ALL=(pause.tar redis.tar)
missing=(); for f in "${ALL[@]}"; do [ -f "$IMAGES/$f" ] || missing+=("$f"); done
if [ "${1:-}" = --find ]; then
  if [ ${#missing[@]} -gt 0 ]; then
    echo "the e2e node's images are not built (missing in $IMAGES: ${missing[*]}): run \`make e2e-bin\`" >&2
    exit 1
  fi
  echo "$IMAGES"
  exit 0
fi
for tool in mmdebstrap buildah; do
  command -v "$tool" >/dev/null || { echo "make e2e-bin: needs $tool to build the e2e images (apt-get install -y mmdebstrap buildah)" >&2; exit 1; }
done
[ -x "$BIN/pause" ] || { echo "make e2e-bin: $BIN/pause is missing: run tests/e2e/cluster/build.sh first" >&2; exit 1; }
mkdir -p "$IMAGES"
start=$(date +%s)
step="start"
log() { step="$*"; echo "[images $(($(date +%s) - start))s] $*" >&2; }
# Any failing command names the step it broke, once.
trap 'echo "make e2e-bin: building the e2e images failed at: $step (after $(($(date +%s) - start))s; output above)" >&2' ERR
# quiet CMD...: run CMD with its output kept aside, shown only if it fails.
quiet() {
  local out
  out=$(mktemp)
  if ! "$@" >"$out" 2>&1; then tail -n 40 "$out" >&2; rm -f "$out"; return 1; fi
  rm -f "$out"
}
work=$(mktemp -d "$IMAGES/.work.XXXXXX")
ctr=""
cleanup() {
  [ -z "$ctr" ] || buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# unchanged NAME INPUTS: the archive exists and was built from these inputs
unchanged() { [ -f "$IMAGES/$1.tar" ] && [ "$(cat "$IMAGES/.$1-inputs" 2>/dev/null)" = "$2" ]; }
# publish NAME IMAGE INPUTS: commit the working container as IMAGE into NAME.tar
# (docker-archive, tagged IMAGE), drop it from buildah's storage and record its inputs
publish() {
  buildah commit --quiet --rm "$ctr" "$2" >/dev/null
  ctr=""
  rm -f "$work/$1.tar"
  buildah push --quiet "$2" "docker-archive:$work/$1.tar:$2"
  buildah rmi "$2" >/dev/null
  mv "$work/$1.tar" "$IMAGES/$1.tar"
  echo "$3" > "$IMAGES/.$1-inputs"
  log "$1.tar ($2, $(du -m "$IMAGES/$1.tar" | cut -f1) MiB)"
}
self=$(sha256sum "$0" | cut -d' ' -f1)

# --- pause: one static binary in an empty image, as build/pause/Dockerfile makes it
inputs=$(printf '%s %s' "$self" "$(sha256sum "$BIN/pause" | cut -d' ' -f1)" | sha256sum | cut -d' ' -f1)
if unchanged pause "$inputs"; then
  log "pause.tar ($PAUSE_IMAGE): unchanged"
else
  log "pause image $PAUSE_IMAGE"
  ctr=$(buildah from scratch)
  buildah copy --quiet --chown 0:0 "$ctr" "$BIN/pause" /pause >/dev/null
  buildah config --entrypoint '["/pause"]' --cmd '' --user 65535:65535 "$ctr"
  publish pause "$PAUSE_IMAGE" "$inputs"
fi

# --- redis: Debian bookworm's redis-server on its Essential set (sh, grep and
# coreutils for the chart's readiness probe `sh -c "redis-cli ping | grep -qx PONG"`;
# no apt). The merged-usr hook installs usr-is-merged, where bookworm's default pulls
# usrmerge and with it perl (50 MB). Given only arguments, redis-server writes no
# pidfile (not daemonized) and logs to stdout, so --dir /data is the one place it
# writes: the chart's read-only root filesystem holds.
packages=redis-server,redis-tools
mirror=()
[ ! -f /etc/apt/sources.list.d/debian.sources ] || mirror=(/etc/apt/sources.list.d/debian.sources)
hooks=/usr/share/mmdebstrap/hooks/merged-usr
sources=""
[ ${#mirror[@]} -eq 0 ] || sources=$(cat "${mirror[@]}")
inputs=$(printf '%s %s %s' "$self" "$packages" "$sources" | sha256sum | cut -d' ' -f1)
if unchanged redis "$inputs"; then
  log "redis.tar ($REDIS_IMAGE): unchanged"
else
  [ -d "$hooks" ] || { echo "make e2e-bin: mmdebstrap's $hooks is missing (mmdebstrap >= 1.0 ships it)" >&2; exit 1; }
  log "mmdebstrap: Debian bookworm (essential) with $packages"
  # no manual pages, translations or documentation (their copyright files stay); /data
  # is the redis user's, as in the official image; no apt lists or caches
  # shellcheck disable=SC2016  # "$1" is the root's path, expanded by mmdebstrap's hook
  quiet mmdebstrap --quiet --variant=essential --include="$packages" --hook-dir="$hooks" --format=tar \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook='install -d -m 0755 -o 999 -g 999 "$1/data"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*.log' \
    bookworm "$work/redis-root.tar" "${mirror[@]}"
  log "redis image $REDIS_IMAGE"
  ctr=$(buildah from scratch)
  buildah add --quiet "$ctr" "$work/redis-root.tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --entrypoint '["redis-server"]' --cmd '' --user 999:999 --workingdir /data --port 6379 "$ctr"
  publish redis "$REDIS_IMAGE" "$inputs"
fi
log "images in $IMAGES ($(($(date +%s) - start))s)"
echo "$IMAGES"
