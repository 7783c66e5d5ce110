#!/usr/bin/env bash
# The Kafka broker the tests start: Apache Kafka's jars, resolved from Maven Central
# (pom.xml beside this script) into ~/.cache/tideline-e2e/kafka-<version>/libs
# (TIDELINE_E2E_CACHE), beside the e2e control plane. `make kafka-bin` runs it before
# pytest starts; `build.sh --find` builds nothing and fails naming what is missing.
# The broker itself runs from those jars with the machine's Java (>= 17):
# tideline.demo.embedded.EmbeddedKafka.
#
# Prints the directory holding the jars on its last line.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/pom.xml")
LIBS=${TIDELINE_E2E_CACHE:-$HOME/.cache/tideline-e2e}/kafka-$VERSION/libs
STAMP=$LIBS/.complete

if [ -f "$STAMP" ] && [ "$STAMP" -nt "$HERE/pom.xml" ]; then
  echo "$LIBS"
  exit 0
fi
if [ "${1:-}" = --find ]; then
  echo "the Kafka broker's jars are not in $LIBS: run \`make kafka-bin\`" >&2
  exit 1
fi
command -v mvn >/dev/null || { echo "make kafka-bin: mvn (Maven) is needed to resolve Kafka's jars" >&2; exit 1; }
command -v java >/dev/null || { echo "make kafka-bin: java (>= 17) is needed to run the broker" >&2; exit 1; }
rm -rf "$LIBS"
mkdir -p "$LIBS"
start=$(date +%s)
out=$(mktemp)
if ! mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$LIBS" >"$out" 2>&1; then
  tail -n 40 "$out" >&2
  rm -f "$out"
  echo "make kafka-bin: resolving Kafka $VERSION's jars from Maven Central failed" >&2
  exit 1
fi
rm -f "$out"
touch "$STAMP"
echo "[build $(($(date +%s) - start))s] kafka $VERSION: $(ls "$LIBS" | wc -l) jars" >&2
echo "$LIBS"
