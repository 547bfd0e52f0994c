# cardano-forge: one entry point for building the test bed, linting, testing and the demo.
# Every target bootstraps what it needs (virtualenv, tools) on a fresh machine.
include tools/versions.env

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/$(VENV)/bin:$(PATH)
PYTEST := $(PY) -m pytest -p no:cacheprovider
# Tests that change this host (the kubelet-backed node, runc containers; markers node, images)
# run in a pytest run of their own beside the run of all the others: both mostly wait on timers.
HOST_TESTS := (node or images) and not pod_demo
NON_HOST_TESTS := not (node or images) and not quorum
# The other tests split by whole files into this many runs side by side (most wait on timers).
INTEGRATION_RUNS ?= 3

SERVICES := services/forge-manager services/health-endpoint services/cli
TOOL_STAMP := .tools/bin/.stamp-$(KUBERNETES_VERSION)-$(ETCD_VERSION)-$(HELM_VERSION)-$(HELM_DOCS_VERSION)-$(PROMETHEUS_SD_VERSION)
NODE_STAMP := .tools/bin/.node-stamp-$(KUBERNETES_VERSION)-$(COREDNS_VERSION)

.PHONY: help venv tools node-tools images images-lock images-clean cluster-up cluster-down node-up node-down lint unit integration durations pod-demo-test quorum chart chart-docs alerts test demo chaos bench bench-pods clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

$(VENV)/.installed: requirements-dev.txt $(foreach s,$(SERVICES),$(s)/pyproject.toml)
	@command -v $(PYTHON) >/dev/null || { echo "error: no $(PYTHON) on PATH: install Python 3.11 or newer"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: $(PYTHON) is older than 3.11: install Python 3.11 or newer, or run make PYTHON=python3.12"; exit 1; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt $(foreach s,$(SERVICES),-e $(s))
	@touch $@

venv: $(VENV)/.installed ## create .venv with the services and the CLI (editable) and the test tools

$(TOOL_STAMP): tools/versions.env tools/build-tools.sh
	bash tools/build-tools.sh
	@rm -f .tools/bin/.stamp-*; touch $@

tools: $(TOOL_STAMP) .tools/bin/forge-guard ## build kube-apiserver, etcd, kubectl, helm (cached by version); install prometheus

.tools/bin/forge-guard: services/forge-guard/main.go services/forge-guard/go.mod
	@mkdir -p .tools/bin
	cd services/forge-guard && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o $(CURDIR)/$@ .

images: ## build the images (forge-manager, health-endpoint, node stand-in) into .images/ (cached by content)
	bash tools/build-images.sh build

images-lock: ## re-pin the bases' Debian packages (tools/images/*.lock) and the services' Python packages (services/*/requirements.lock)
	bash tools/build-images.sh lock

images-clean: ## remove this project's images from buildah's storage and .images/ (the cache stays)
	bash tools/build-images.sh clean

cluster-up: venv tools ## start etcd + kube-apiserver on loopback; kubeconfig in .cluster/kubeconfig
	$(PY) -m tests.harness.controlplane up --dir .cluster

cluster-down: venv node-down ## stop what cluster-up (and node-up) started and remove its state
	$(PY) -m tests.harness.controlplane down --dir .cluster

$(NODE_STAMP): tools/versions.env tools/build-tools.sh tools/node/pause.c tests/harness/nodeprobe/main.go
	bash tools/build-tools.sh node
	@rm -f .tools/bin/.node-stamp-*; touch $@

node-tools: $(NODE_STAMP) ## build kubelet, kube-proxy, kcm, scheduler, CoreDNS (cached by version); apt containerd, runc, CNI

node-up: venv tools node-tools ## add a real node (containers) to the cluster-up control plane; root, one per host
	$(PY) -m tests.harness.node up --cluster-dir .cluster

node-down: venv ## stop the node and restore every host setting it changed (idempotent)
	$(PY) -m tests.harness.node down

lint: venv ## ruff on the whole tree, mypy --strict on the services and the CLI, gofmt on forge-guard
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy services/forge-manager/src services/health-endpoint/src services/cli/src
	@test -z "$$(gofmt -l services/forge-guard tests/harness/nodeprobe)" || { echo "gofmt: run 'gofmt -w services/forge-guard tests/harness/nodeprobe'"; exit 1; }

unit: venv ## fast unit tests of the services and the CLI (Python) and of forge-guard (Go)
	cd services/forge-guard && go vet ./... && go test -count=1 ./...
	$(PYTEST) services/forge-manager/tests services/health-endpoint/tests services/cli/tests

integration: venv tools node-tools ## tests against the real control plane, Prometheus, helm, promtool and the node
	@mkdir -p .test-logs
	@echo "integration: $(INTEGRATION_RUNS) runs of whole test files (balanced by tests/durations.json) and the tests that change this host, side by side; the others' output follows at the end (.test-logs/)"
	@pids=""; \
	$(PYTEST) --durations=15 -m "$(HOST_TESTS)" tests > .test-logs/host.log 2>&1 & pids="$$pids $$!"; \
	for k in $$(seq 2 $(INTEGRATION_RUNS)); do \
	  $(PYTEST) --durations=10 -m "$(NON_HOST_TESTS)" --shard $$k/$(INTEGRATION_RUNS) \
	    --record-durations .test-logs/durations-$$k.json tests > .test-logs/run-$$k.log 2>&1 & pids="$$pids $$!"; \
	done; \
	rc=0; $(PYTEST) --durations=10 -m "$(NON_HOST_TESTS)" --shard 1/$(INTEGRATION_RUNS) \
	  --record-durations .test-logs/durations-1.json tests || rc=1; \
	for p in $$pids; do wait $$p || rc=1; done; \
	for k in $$(seq 2 $(INTEGRATION_RUNS)); do echo "---- run $$k of $(INTEGRATION_RUNS) (.test-logs/run-$$k.log) ----"; cat .test-logs/run-$$k.log; done; \
	echo "---- tests that change this host (.test-logs/host.log) ----"; cat .test-logs/host.log; \
	for k in $$(seq 2 $(INTEGRATION_RUNS)); do tail -n 1 .test-logs/run-$$k.log | sed "s/^/run $$k: /"; done; \
	tail -n 1 .test-logs/host.log | sed "s/^/host: /"; \
	echo "integration: exit $$rc (per-file seconds: .test-logs/durations-*.json; make durations keeps them)"; \
	exit $$rc

durations: venv ## keep the per-file seconds of the last make integration in tests/durations.json (balances its runs)
	$(PY) -m tests.harness.shards merge tests/durations.json .test-logs/durations-*.json

pod-demo-test: venv tools node-tools images ## make demo on real pods end to end (root; its own node; 5-11 min, not in make test)
	CARDANO_FORGE_REQUIRE_IMAGES=1 $(PYTEST) -m pod_demo tests/demo

quorum: venv tools ## three regions on an etcd quorum end to end (lost, partitioned, slow regions)
	$(PYTEST) tests -m quorum

chart: venv tools ## the chart alone: helm lint, rendering matrix, install and RBAC on the control plane
	$(PYTEST) tests/chart

chart-docs: tools ## regenerate the chart README's values table from values.yaml (helm-docs)
	helm-docs --chart-search-root charts --sort-values-order file

alerts: venv tools ## the alert rules alone: promtool check and unit tests, Alertmanager example
	$(PYTEST) tests/alerts

test: venv tools ## everything CI runs: lint, unit, images, integration (the image tests required)
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory images
	CARDANO_FORGE_REQUIRE_IMAGES=1 $(MAKE) --no-print-directory integration

DEMO_MODE ?= auto
demo: venv tools ## the main job: two regions failing over live, on real pods if the host can (DEMO_MODE=auto|pods|processes)
	@DEMO_MODE=$(DEMO_MODE) $(PY) -m demo $(DEMO_ARGS)

chaos: venv tools ## the full fault-injection run (SCENARIOS=200 SEED=1, CHAOS_ARGS); then QUORUM_SCENARIOS=30 on an etcd quorum; prints overlap and gaps per kind
	$(PY) -m tests.chaos.run --scenarios $${SCENARIOS:-200} --seed $${SEED:-1} $(CHAOS_ARGS)
	$(PY) -m tests.chaos.quorum --scenarios $${QUORUM_SCENARIOS:-30} --seed $${SEED:-1}

bench: venv tools ## print the figures: failover times, sidecar memory, forge-guard reaction, health endpoint load, etcd quorum, CLI
	$(PY) -m bench.failover --runs $${RUNS:-20}
	$(PY) -m bench.forge_guard --runs $${RUNS:-20}
	$(PY) bench/health_endpoint.py
	$(PY) -m bench.quorum --runs $${RUNS:-20}
	$(PY) -m bench.cli --runs $${RUNS:-20}

bench-pods: venv tools node-tools images ## the figures on real pods (root; its own node): handover, failover, install, memory
	$(PY) -m bench.pods --runs $${RUNS:-20} --installs $${INSTALLS:-2}

clean: cluster-down ## remove .venv, .tools links and the cluster state (the tool cache stays)
	rm -rf $(VENV) .tools .cluster
