# kubectl-gpu — build, test and demo. `make help` lists the targets.
SHELL := /usr/bin/env bash
VERSION ?= v0.1.0-dev
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null)
PKG     := github.com/kubectl-gpu/kubectl-gpu
LDFLAGS := -s -w -X $(PKG)/common/buildinfo.Version=$(VERSION) -X $(PKG)/common/buildinfo.Commit=$(COMMIT)
GO_TEST_FLAGS ?=

.PHONY: help build cross tools test unit e2e bench bench-long bench-scale soak demo demo-doc cluster deps clean agent fuzz docs samples dist krew-manifest image push-image lint-workflows

help: ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build bin/kubectl-gpu (CGO off)
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/kubectl-gpu ./plugins/kubectl-gpu

deps: ## install what the tests need from the machine's packages (kubectl) when missing
	@hack/testenv/deps.sh

tools: ## build the local cluster's binaries into ~/.cache/kubectl-gpu (once per machine)
	hack/testenv/build-tools.sh

test: deps tools ## every test: unit, command golden files, end-to-end on the local cluster
	KGPU_REQUIRE_E2E=1 CGO_CFLAGS=-Wno-deprecated-declarations go test -count=1 $(GO_TEST_FLAGS) ./...

unit: ## unit and command tests only (no cluster)
	CGO_CFLAGS=-Wno-deprecated-declarations go test -count=1 $(GO_TEST_FLAGS) $$(go list ./... | grep -v /test/)

# Run once: the long ones (a roll of 100 nodes with reboots, ~5 min a pair) and the Helm-sized
# ones, which take 9 interleaved pairs a run (their medians); the others three times after
# Go's first run. See docs/performance.md for which figure is whose.
BENCH_LONG = Benchmark(Roll100|Up100|UpUpgrade100|OperatorInstall|DevicePluginInstall)$$
BENCH_ENV = KGPU_REQUIRE_E2E=1 CGO_CFLAGS=-Wno-deprecated-declarations

bench: deps tools ## benchmarks against their baselines in the same run, on a 110-node cluster
	$(BENCH_ENV) KGPU_BENCH_NODES=110 KGPU_BENCH_PODS=1100 go test -run '^$$' -bench '$(BENCH_LONG)' -benchtime 1x -timeout 80m ./test/bench/
	$(BENCH_ENV) KGPU_BENCH_NODES=110 KGPU_BENCH_PODS=1100 go test -run '^$$' -bench . -skip '$(BENCH_LONG)|All$$' -benchtime 3x -timeout 80m ./test/bench/ ./common/mirror/

bench-long: deps tools ## the 1000-node figures (1000 nodes, 10000 GPU pods), then bench-scale
	$(BENCH_ENV) KGPU_BENCH_NODES=1000 KGPU_BENCH_PODS=10000 go test -run '^$$' -bench '1000$$' -benchtime 3x -timeout 80m ./test/bench/
	$(MAKE) bench-scale

bench-scale: deps tools ## how the cost grows: nodes, prep's check, verify, doctor --no-agent over 100, 1000 and 3000 nodes
	for n in 100 1000 3000; do \
		$(BENCH_ENV) KGPU_BENCH_NODES=$$n KGPU_BENCH_PODS=$$((n * 10)) go test -run '^$$' -bench 'Benchmark(Nodes|ListNodes|PrepAll|VerifyAll|Doctor)$$' -benchtime 1x -timeout 80m ./test/bench/ || exit 1; \
	done

soak: deps tools ## verify and prep, whole and interrupted, over and over for SOAK (default 30m); prep's client killed, the cluster's own clean-up timed
	KGPU_REQUIRE_E2E=1 KGPU_SOAK=$(or $(SOAK),30m) go test -count=1 -run '^TestSoak' -v -timeout 0 ./test/fault/

demo: build ## build, then the main commands against the current cluster (read-only) or the story on a local one
	@command -v kubectl >/dev/null || KGPU_DEPS=kubectl hack/testenv/deps.sh
	hack/testenv/build-tools.sh etcd kwok kubernetes
	hack/devtools/demo.sh

demo-doc: build ## run the demo on the local cluster and write its output to docs/demo.md
	@command -v kubectl >/dev/null || KGPU_DEPS=kubectl hack/testenv/deps.sh
	hack/testenv/build-tools.sh etcd kwok kubernetes
	hack/devtools/demo-doc.sh

cluster: tools ## start the local cluster in the foreground (Ctrl-C stops it); REAL_NODES=1 adds a real node
	go run ./hack/devtools/cluster up --real-nodes $(or $(REAL_NODES),0)

clean:
	rm -rf bin dist

PLATFORMS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64
cross: ## build the plugin for every release platform into bin/<os>_<arch>/
	@for p in $(PLATFORMS); do os=$${p%/*}; arch=$${p#*/}; ext=; [ $$os = windows ] && ext=.exe; \
	  echo "build $$os/$$arch"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch go build -trimpath -ldflags '$(LDFLAGS)' -o bin/$${os}_$${arch}/kubectl-gpu$$ext ./plugins/kubectl-gpu || exit 1; \
	done

agent: ## build bin/gpu-node-agent for this machine (cgo, for go-nvml; the recipe is hack/release/agentbuild)
	go run ./hack/release/build-agent -out bin/gpu-node-agent -version $(VERSION) -commit $(COMMIT)

fuzz: ## every fuzz target for FUZZTIME each (default 1000000x: a million inputs)
	go test -run '^$$' -fuzz '^FuzzContainerdEdit$$' -fuzztime $${FUZZTIME:-1000000x} -fuzzminimizetime 5s ./common/hostconfig/
	go test -run '^$$' -fuzz '^FuzzAgentOutput$$' -fuzztime $${FUZZTIME:-1000000x} -fuzzminimizetime 5s ./common/prep/
	go test -run '^$$' -fuzz '^FuzzDerive$$' -fuzztime $${FUZZTIME:-1000000x} -fuzzminimizetime 5s ./common/operator/
	go test -run '^$$' -fuzz '^FuzzSetValues$$' -fuzztime $${FUZZTIME:-1000000x} -fuzzminimizetime 5s ./common/operator/

docs: ## regenerate the command reference in docs/commands (checked by the tests)
	go run ./hack/devtools/docs docs/commands

samples: ## rerun the runbook pages' sample sessions on the local cluster (docs/runbook-*.md; needs KGPU_GPU_OPERATOR_CHART)
	go run ./hack/devtools/samples

dist: ## release archives and checksums.txt in dist/ (VERSION=vX.Y.Z), reproducible
	go run ./hack/release/dist -version $(VERSION) -out dist

krew-manifest: ## render krew/gpu.yaml from .krew.yaml and the archives in dist/
	go run ./hack/release/dist -version $(VERSION) -out dist -krew krew/gpu.yaml

IMAGE_ARCHS ?= amd64 arm64
IMAGE_REPO  ?= ghcr.io/kubectl-gpu/gpu-node-agent
image: ## node-agent image for IMAGE_ARCHS without Docker: dist/gpu-node-agent_$(VERSION)_linux_<arch>.tar (docker load) and the multi-arch OCI layout dist/gpu-node-agent_$(VERSION)_oci
	@for a in $(IMAGE_ARCHS); do \
	  echo "build gpu-node-agent linux/$$a"; \
	  go run ./hack/release/build-agent -arch $$a -out bin/linux_$$a/gpu-node-agent -version $(VERSION) -commit $(COMMIT) || exit 2; \
	  sr=$$(hack/release/agent-sysroot.sh $$a) || exit 1; \
	done; \
	go run ./hack/release/image -arch $$(echo $(IMAGE_ARCHS) | tr ' ' ,) -agent 'bin/linux_{arch}/gpu-node-agent' \
	  -sysroot "$$(dirname $$sr)/{arch}" -tag $(IMAGE_REPO):$(VERSION) -out dist -oci dist/gpu-node-agent_$(VERSION)_oci
push-image: ## push dist/gpu-node-agent_$(VERSION)_oci (make image) to $(IMAGE_REPO):$(VERSION); REGISTRY_USERNAME/PASSWORD or the Docker config
	go run ./hack/release/push-image -oci dist/gpu-node-agent_$(VERSION)_oci -to $(IMAGE_REPO):$(VERSION) $(if $(INSECURE),-insecure)

lint-workflows: ## actionlint over .github/workflows (also run by make test)
	go test -count=1 -run TestWorkflows ./test/dist/
