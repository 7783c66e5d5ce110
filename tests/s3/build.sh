#!/usr/bin/env bash
# The S3-compatible server the warm-start tests start: moto's, in a virtualenv of its own
# in ~/.cache/tideline-e2e/moto-<version> (TIDELINE_E2E_CACHE), beside the Kafka jars. Not
# in the dev extra: moto needs botocore, which pins python-dateutil<3, and kubernetes 37
# needs >=3 (the kserve SDK's conflict). `make s3-bin` runs it before pytest starts;
# `build.sh --find` builds nothing and fails naming what is missing.
#
# Prints the virtualenv's python on its last line.
set -euo pipefail

VERSION=5.2.6  # moto[server]
PYTHON=${PYTHON:-python3}
VENV=${TIDELINE_E2E_CACHE:-$HOME/.cache/tideline-e2e}/moto-$VERSION
STAMP=$VENV/.complete

if [ -f "$STAMP" ]; then
  echo "$VENV/bin/python"
  exit 0
fi
if [ "${1:-}" = --find ]; then
  echo "moto's server is not in $VENV: run \`make s3-bin\`" >&2
  exit 1
fi
rm -rf "$VENV"
start=$(date +%s)
"$PYTHON" -m venv "$VENV"
out=$(mktemp)
if ! "$VENV/bin/pip" install -q "moto[server]==$VERSION" >"$out" 2>&1; then
  tail -n 40 "$out" >&2
  rm -f "$out"
  echo "make s3-bin: installing moto[server]==$VERSION failed" >&2
  exit 1
fi
rm -f "$out"
touch "$STAMP"
echo "[build $(($(date +%s) - start))s] moto $VERSION" >&2
echo "$VENV/bin/python"
