#!/usr/bin/env bash
# `make image`: the runtime image, tagged tideline.IMAGE:tideline.__version__, written
# as dist/tideline-runtime-<version>.tar (docker-archive: `kind load image-archive`,
# `k3d image import`, `ctr images import` take it) with its SBOM next to it
# (CycloneDX JSON, made in the build from the image's own Python environment).
#
# Built with whatever is here: docker when a daemon answers, else without one - a
# Debian bookworm base made by mmdebstrap (python3 from Debian), imported into
# buildah, then `buildah bud --isolation chroot` on the same Dockerfile
# (TIDELINE_IMAGE_BUILDER=docker|buildah chooses). pip in the build uses the index
# settings and certificate bundle the host's pip is configured with.
#
# Nothing is rebuilt when nothing that goes in changed (a hash of the Dockerfile,
# this script and the files the build copies: dist/.image-inputs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
start=$SECONDS
say() { printf '[image %ss] %s\n' "$((SECONDS - start))" "$*"; }
trap 'say "failed at line $LINENO: $BASH_COMMAND" >&2' ERR

read -r name version < <(PYTHONPATH=runtime "$PY" -c \
  'import tideline; print(tideline.IMAGE, tideline.__version__)')
tag="$name:$version"
archive="dist/tideline-runtime-$version.tar"
sbom="dist/tideline-runtime-$version.cdx.json"
mkdir -p dist

inputs=$( { sha256sum Dockerfile .dockerignore image/build.sh
            git ls-files -z pyproject.toml README.md runtime operator | sort -z | xargs -0 sha256sum
          } | sha256sum | cut -d' ' -f1 )
report() {
  local size components
  size=$(du -m "$archive" | cut -f1)
  components=$("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["components"]))' "$sbom")
  say "$tag: $archive ($size MiB), SBOM $sbom ($components components)"
}
if [ -f "$archive" ] && [ -f "$sbom" ] && [ "$(cat dist/.image-inputs 2>/dev/null)" = "$inputs" ]; then
  say "unchanged since the last build"
  report
  exit 0
fi

builder=${TIDELINE_IMAGE_BUILDER:-}
if [ -z "$builder" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then builder=docker; else builder=buildah; fi
fi

# pip's settings on this host, handed to the build (never a hard-coded index)
pip_get() {
  local env_name=$1 key=$2 value
  value=${!env_name:-}
  [ -n "$value" ] || value=$("$PY" -m pip config get "global.$key" 2>/dev/null || true)
  printf '%s' "$value"
}
build_args=(--build-arg "VERSION=$version")
for pair in PIP_INDEX_URL:index-url PIP_EXTRA_INDEX_URL:extra-index-url PIP_TRUSTED_HOST:trusted-host; do
  value=$(pip_get "${pair%%:*}" "${pair#*:}")
  [ -z "$value" ] || build_args+=(--build-arg "${pair%%:*}=$value")
done
cert=$(pip_get PIP_CERT cert)
secret=()
[ -z "$cert" ] || secret=(--secret "id=pip-cert,src=$cert")

case "$builder" in
docker)
  say "docker build $tag"
  DOCKER_BUILDKIT=1 docker build "${build_args[@]}" "${secret[@]}" -t "$tag" .
  docker save -o "$archive" "$tag"
  ctr=$(docker create "$tag")
  docker cp "$ctr:/opt/tideline/share/sbom.cdx.json" "$sbom"
  docker rm "$ctr" >/dev/null
  ;;
buildah)
  for tool in mmdebstrap buildah; do
    command -v "$tool" >/dev/null || { echo "make image: needs $tool (apt-get install -y mmdebstrap buildah) or a docker daemon" >&2; exit 1; }
  done
  # the base: Debian bookworm's python3 (3.11 meets requires-python), its venv module
  # and CA certificates, from the mirror this host's apt uses
  packages=python3,python3-venv,ca-certificates
  mirror=()
  [ ! -f /etc/apt/sources.list.d/debian.sources ] || mirror=(/etc/apt/sources.list.d/debian.sources)
  base_id=$(printf '%s %s %s' "$packages" "$(cat "${mirror[@]}" 2>/dev/null)" "$(sed -n '/^    mmdebstrap/,/bookworm dist/p' "$0")" | sha256sum | cut -c1-12)
  base="localhost/tideline/base:bookworm-$base_id"
  if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
    say "mmdebstrap: Debian bookworm with $packages"
    # no manual pages, translations or documentation (their copyright files stay)
    mmdebstrap --quiet --variant=minbase --include="$packages" --format=tar \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      bookworm dist/base.tar "${mirror[@]}"
    ctr=$(buildah from scratch)
    buildah add --quiet "$ctr" dist/base.tar /
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
    buildah commit --quiet --rm "$ctr" "$base" >/dev/null
    rm -f dist/base.tar
  fi
  say "buildah bud --isolation chroot $tag (base $base)"
  buildah bud --quiet --isolation chroot --build-arg "BASE=$base" "${build_args[@]}" \
    "${secret[@]}" -t "$tag" .
  rm -f "$archive"
  buildah push --quiet "$tag" "docker-archive:$archive:docker.io/$tag"
  ctr=$(buildah from --quiet "$tag")
  mnt=$(buildah mount "$ctr")
  cp "$mnt/opt/tideline/share/sbom.cdx.json" "$sbom"
  buildah umount "$ctr" >/dev/null
  buildah rm "$ctr" >/dev/null
  ;;
*)
  echo "make image: TIDELINE_IMAGE_BUILDER must be docker or buildah (got $builder)" >&2
  exit 1
  ;;
esac
echo "$inputs" > dist/.image-inputs
report
