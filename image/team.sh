#!/usr/bin/env bash
# `make image`, second step: a team's image built FROM the runtime image, as a team
# builds one (examples/custom/Dockerfile: the runtime image and the team's own learner
# class), written as dist/tideline-team-example-<version>.tar. The image tests run the
# team's learner and server from it: what a team's Dockerfile makes is what its pods run.
#
# Built with the builder image/build.sh used (docker, or buildah without a daemon), on
# the runtime image it left in that builder's store; nothing is rebuilt when neither the
# runtime image nor the example changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
start=$SECONDS
say() { printf '[team image %ss] %s\n' "$((SECONDS - start))" "$*"; }
trap 'say "failed at line $LINENO: $BASH_COMMAND" >&2' ERR

read -r name version < <(PYTHONPATH=runtime "$PY" -c \
  'import tideline; print(tideline.IMAGE, tideline.__version__)')
runtime="$name:$version"
tag="tideline.dev/examples/fraud-team:$version"
archive="dist/tideline-team-example-$version.tar"

inputs=$( { cat dist/.image-inputs
            sha256sum image/team.sh
            git ls-files -z examples/custom | sort -z | xargs -0 sha256sum
          } | sha256sum | cut -d' ' -f1 )
if [ -f "$archive" ] && [ "$(cat dist/.team-image-inputs 2>/dev/null)" = "$inputs" ]; then
  say "unchanged since the last build: $archive"
  exit 0
fi

builder=${TIDELINE_IMAGE_BUILDER:-}
if [ -z "$builder" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then builder=docker; else builder=buildah; fi
fi
rm -f "$archive"
case "$builder" in
docker)
  docker build --build-arg "RUNTIME=$runtime" -t "$tag" examples/custom
  docker save -o "$archive" "$tag"
  ;;
buildah)
  # buildah keeps the runtime image under localhost/ (image/build.sh tagged it so)
  buildah bud --quiet --isolation chroot --build-arg "RUNTIME=localhost/$runtime" \
    -t "$tag" examples/custom >/dev/null
  buildah push --quiet "$tag" "docker-archive:$archive:$tag"
  ;;
*)
  echo "make image: TIDELINE_IMAGE_BUILDER must be docker or buildah (got $builder)" >&2
  exit 1
  ;;
esac
echo "$inputs" > dist/.team-image-inputs
say "$tag: $archive ($(du -m "$archive" | cut -f1) MiB)"
