# The runtime image: learner, prediction server, drift monitor and operator, one
# entry point (`tideline learner|server|monitor|operator`). `make image` builds it
# with docker, or without a daemon (buildah, on a Debian base made by mmdebstrap);
# see image/build.sh and docs/getting-started.md, the tour's "On a cluster".
#
# BASE must have python3 >= 3.11 with its venv module: python:3.12-slim, or
# Debian bookworm with python3 and python3-venv.
ARG BASE=python:3.12-slim

# ---------------------------------------------------------------------------- build
FROM ${BASE} AS build
# pip's index settings are the builder's own (image/build.sh reads them from `pip
# config`); its certificate bundle, when it names one, comes as the build secret
# pip-cert: mounted for the RUN that needs it, never in a layer.
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_TRUSTED_HOST=""
# the SBOM tool, in a venv of its own that the image leaves behind
ARG CYCLONEDX_BOM=cyclonedx-bom==7.5.0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_DEFAULT_TIMEOUT=180
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runtime/ runtime/
COPY operator/ operator/
RUN --mount=type=secret,id=pip-cert \
    set -eu; \
    for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST; do \
      eval "[ -n \"\${$v}\" ] || unset $v"; \
    done; \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi; \
    python3 -m venv /opt/tideline; \
    /opt/tideline/bin/pip wheel --no-deps --wheel-dir /wheels .; \
    /opt/tideline/bin/pip install /wheels/tideline-*.whl; \
    /opt/tideline/bin/pip uninstall -y setuptools pip; \
    /opt/tideline/bin/tideline --version; \
    python3 -m venv /opt/sbom; \
    /opt/sbom/bin/pip install "${CYCLONEDX_BOM}"; \
    mkdir -p /opt/tideline/share; \
    /opt/sbom/bin/cyclonedx-py environment --output-format JSON \
      --output-file /opt/tideline/share/sbom.cdx.json /opt/tideline

# ---------------------------------------------------------------------------- runtime
FROM ${BASE}
ARG VERSION=0.0.0
ARG SOURCE=https://github.com/tideline/tideline
LABEL org.opencontainers.image.title="tideline runtime" \
      org.opencontainers.image.description="Online-learning models on Kubernetes: learner, prediction server, drift monitor, operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/tideline /opt/tideline
# Nothing is written outside /tmp (readOnlyRootFilesystem): no bytecode caches, a
# home in /tmp for whatever library wants one.
ENV PATH=/opt/tideline/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["tideline"]
CMD ["--help"]
