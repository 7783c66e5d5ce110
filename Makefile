# tideline: `make demo` runs the loop locally, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# One virtualenv, a stamp per extra installed in it: `make demo` needs only [demo] (what
# `tideline run` adds to the runtime's dependencies), the tests and tools [dev], which
# includes it - so installing [dev] stamps [demo] too.
DEMO := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed-dev
# pip -q still shows the build backend's warnings: setuptools' "Editable installation" notice
# comes with every editable install of a project whose packages sit in more than one
# source root (runtime/ and operator/: not "simple", so a meta path finder maps them) -
# a notice of how it installs, not a problem of the configuration
PIP := PYTHONWARNINGS="ignore:Editable installation" $(VENV)/bin/pip install -q

.PHONY: demo test e2e e2e-bin kafka-bin compat-bin s3-bin image lint bench clean cluster cluster-down

$(PY):
	@$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: install python3-venv"; exit 1; }
	@$(VENV)/bin/pip install -q --upgrade pip

$(DEMO): pyproject.toml | $(PY)
	@echo "installing tideline[demo] into $(VENV) (once)"
	@$(PIP) -e '.[demo]'
	@touch $@

$(STAMP): pyproject.toml | $(PY)
	@echo "installing tideline[dev] into $(VENV) (once)"
	@$(PIP) -e '.[dev]'
	@touch $@ $(DEMO)

demo: $(DEMO)
	$(VENV)/bin/tideline run examples/fraud.yaml --duration 90s --rate 2000/s --drift-at 20s --poison-at 35s --canary-at 60s --history 24h

test: lint e2e-bin kafka-bin compat-bin s3-bin image
	$(PY) -m pytest

# The kserve SDK (its gRPC client is tested against the servers) in a virtualenv of its own
# in ~/.cache/tideline-compat: its pins conflict with the suite's; about 80 s the first time.
compat-bin: $(STAMP)
	$(PY) bench/clients.py --install

# The runtime image (docker, or daemonless: mmdebstrap + buildah), its archive and SBOM
# in dist/; the image tests run its entry points from the unpacked archive.
image: $(STAMP)
	PY=$(PY) image/build.sh
	PY=$(PY) image/team.sh

# The e2e tests' cluster, built into ~/.cache/tideline-e2e (TIDELINE_E2E_CACHE) as its
# own step: the control plane and node from Go modules (kube-apiserver, etcd, kubelet,
# kube-proxy, the CNI plugins, a lean CoreDNS, kwok, helm...), pause from its C source,
# then the node's pause and redis images (mmdebstrap + buildah archives for
# `ctr images import`). 7-17 minutes the first time on 2 cores, with `[build 120s] ...`
# and `[images 20s] ...` progress lines; the tests only find it.
e2e-bin:
	bash tests/e2e/cluster/build.sh >/dev/null
	bash tests/e2e/cluster/images.sh >/dev/null

# The Kafka broker the tests start (one KRaft node on loopback): Apache Kafka's jars
# from Maven Central into ~/.cache/tideline-e2e/kafka-<version>/libs, about 10 s the
# first time; run by the machine's Java.
kafka-bin:
	bash tests/kafka/build.sh >/dev/null

# The S3 server the warm-start tests start (moto's, on loopback, credentials checked): a
# virtualenv of its own in ~/.cache/tideline-e2e/moto-<version>, about 30 s the first time
# (not in the dev extra: botocore pins python-dateutil<3, kubernetes 37 needs >=3).
s3-bin:
	PYTHON=$(PYTHON) bash tests/s3/build.sh >/dev/null

# The suite's one-node cluster (a real kubelet, containerd, CNI, kube-proxy, CoreDNS) for
# a person to try tideline by hand: runs until Ctrl-C, then removes everything it made.
# `make cluster-down` removes what a killed one left (namespaces, links, mounts, cgroups).
cluster: $(STAMP) e2e-bin image
	$(PY) -m tests.e2e.cluster.up

cluster-down: $(STAMP)
	$(PY) -m tests.e2e.cluster.up --down

e2e: $(STAMP) e2e-bin
	$(PY) -m pytest -m e2e tests/e2e

lint: $(STAMP)
	$(VENV)/bin/ruff check runtime operator tests bench
	$(VENV)/bin/ruff format --check runtime operator tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# numpy is measured without the machine's OPENBLAS_* overrides (they slow a
# current OpenBLAS); bench/serve.py needs wrk (Debian: apt-get install wrk).
# Not here, for its length: the operator with 1,000 OnlineModels on the e2e
# control plane, `$(PY) -m bench.portfolio --before <commit>` (needs e2e-bin).
bench: $(STAMP)
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) bench/learners.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) bench/drift.py
	command -v wrk >/dev/null || apt-get install -y -q wrk
	$(PY) bench/serve.py
	$(PY) bench/guardrails.py
	$(PY) bench/labels.py
	$(PY) bench/ingest.py
	$(PY) bench/clients.py
	$(PY) bench/faults.py --scenarios all --seeds 1
	$(PY) -m bench.pods

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
