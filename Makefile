# One command runs the service (make run); one command passes the tests (make test).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(CURDIR)/.bin
OPA    := $(BIN)/opa
REGAL  := $(BIN)/regal
COVERAGE ?= 100

# Real third-party MCP servers for the proxy's tests and bench (see the mcp-servers target).
MCP_FS_SERVER := @modelcontextprotocol/server-filesystem@2026.8.31
MCP_SERVERS   := $(CURDIR)/.mcp-servers

PDP_PORT ?= 50051
HTTP_PORT ?= 8080
CONSOLE_PORT ?= 8081

PROTOS := $(wildcard protos/pdp/v1/*.proto)

.PHONY: help install tools protos run jaeger bench soak test lint typecheck policy-check policy-ci bundle-check pytest clean mcp-servers fuzz

help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: $(VENV)/.installed tools ## venv with pinned Python deps, and the Go-built tools

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

tools: $(OPA) $(REGAL) $(BIN)/grpcurl $(BIN)/jaeger $(BIN)/compose-go $(BIN)/notecheck $(BIN)/kubeconform ## build opa, regal, grpcurl, jaeger, compose-go, notecheck, kubeconform from their pinned Go modules (only when a pin changes)

BENCH_TOOLS := $(BIN)/ghz $(BIN)/vegeta

# Each tool has its own Go module under tools/ so their dependency graphs never merge.
$(BIN)/%: tools/%/go.mod tools/%/go.sum
	@mkdir -p $(BIN)
	cd tools/$* && go build -trimpath -o $(BIN)/ tool
	@touch $@

# compose-go's command package is named `cmd`; give the binary a name that says what it is.
$(BIN)/compose-go: tools/compose-go/go.mod tools/compose-go/go.sum
	@mkdir -p $(BIN)
	cd tools/compose-go && go build -trimpath -o $@ github.com/compose-spec/compose-go/v2/cmd

# notecheck is ours: a few lines around Go's sumdb/note, the reference C2SP signed-note verifier.
$(BIN)/notecheck: tools/notecheck/go.mod tools/notecheck/go.sum tools/notecheck/main.go
	@mkdir -p $(BIN)
	cd tools/notecheck && go build -trimpath -o $@ .

protos: $(VENV)/.installed ## regenerate pdp/v1 stubs from protos/
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. \
	  --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --mypy_out=. \
	  --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=. $(PROTOS)

run: install ## OPA sidecar (on a private unix socket) + PDP (gRPC, AuthZEN HTTP, approver console) on localhost (PDP_PORT, HTTP_PORT, CONSOLE_PORT)
	@echo "Approver console: http://127.0.0.1:$(CONSOLE_PORT)/ (docs/console.md). Dev login, local only: an approver"
	@echo "from rego/pdp/approvals/data.json (e.g. dan.meyer@bank.example) and the code in the 'approver console' line below."
	PDP_OPA_BIN=$(OPA) PDP_LISTEN=127.0.0.1:$(PDP_PORT) PDP_HTTP_LISTEN=127.0.0.1:$(HTTP_PORT) \
	  PDP_CONSOLE_LISTEN=127.0.0.1:$(CONSOLE_PORT) $(VENV)/bin/pdp dev --bundle rego

$(VENV)/.bench: $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench $(OPA) $(BIN)/grpcurl $(BENCH_TOOLS) $(MCP_SERVERS)/.installed ## PDP vs direct OPA, side by side (BENCH_SECONDS, BENCH_CONCURRENCY; ARGS=--quick)
	$(PY) bench/run.py $(ARGS)
	PDP_OPA_BIN=$(OPA) $(PY) bench/authzen_bench.py $(if $(findstring --quick,$(ARGS)),--seconds 4)
	PDP_OPA_BIN=$(OPA) $(PY) bench/mcp_bench.py
	PDP_OPA_BIN=$(OPA) $(PY) bench/budgets_bench.py $(if $(findstring --quick,$(ARGS)),--seconds 4 --rounds 1)
	$(PY) bench/report_bench.py $(if $(findstring --quick,$(ARGS)),10000,100000)
	$(PY) bench/lifecycle.py $(if $(findstring --quick,$(ARGS)),--entries 10000 --seconds 4)

soak: $(VENV)/.bench $(OPA) $(BIN)/grpcurl $(BENCH_TOOLS) ## the PDP at half its peak for 10 minutes: errors and RSS growth (SOAK_SECONDS; not in CI)
	$(PY) bench/soak.py $(ARGS)

jaeger: $(BIN)/jaeger ## Jaeger v2, in memory: UI/API on 127.0.0.1:16686, OTLP gRPC on 127.0.0.1:4317
	$(BIN)/jaeger

test: install lint typecheck policy-check pytest ## everything CI checks

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy pdp

policy-check: $(OPA) $(REGAL) ## opa fmt, opa check --strict, opa test with coverage threshold, Regal
	$(OPA) fmt --fail -l rego
	$(OPA) check --strict rego
	$(OPA) test --coverage --threshold $(COVERAGE) rego > /dev/null || \
	  { $(OPA) test rego; echo "policy coverage is below $(COVERAGE)%: see rego/README.md"; exit 1; }
	$(REGAL) test .regal/rules > /dev/null || $(REGAL) test .regal/rules
	$(REGAL) lint rego
	python3 .regal/asserted_check.py --opa $(OPA) rego
	$(MAKE) --no-print-directory bundle-check BUNDLE=examples/authzen-todo

# A further bundle (an example), checked on its own: its packages would clash with rego/'s.
bundle-check: $(OPA) $(REGAL)
	$(OPA) fmt --fail -l $(BUNDLE)
	$(OPA) check --strict $(BUNDLE)
	$(OPA) test --coverage --threshold $(COVERAGE) $(BUNDLE) > /dev/null || \
	  { $(OPA) test $(BUNDLE); echo "policy coverage of $(BUNDLE) is below $(COVERAGE)%"; exit 1; }
	$(REGAL) lint $(BUNDLE)

# The npm filesystem server in an ignored project-local prefix (needs node and npm); mcp-server-git
# is a dev dependency in the venv.
mcp-servers: $(MCP_SERVERS)/.installed ## install the MCP servers the proxy's tests run against

$(MCP_SERVERS)/.installed: Makefile
	npm install --prefix $(MCP_SERVERS) --no-audit --no-fund --save-exact $(MCP_FS_SERVER)
	touch $@

# tests/unit/test_k8s.py runs kubeconform on deploy/k8s against the schemas of the kubernetes-validate dev dependency.
pytest: $(VENV)/.installed $(OPA) $(BIN)/notecheck $(BIN)/kubeconform $(MCP_SERVERS)/.installed
	PDP_OPA_BIN=$(OPA) $(PY) -m pytest

FUZZ_INPUTS ?= 100000

fuzz: $(VENV)/.installed $(OPA) ## fuzz Decide's request bytes against a real PDP and OPA (FUZZ_INPUTS, default 100000); prints the count
	PDP_OPA_BIN=$(OPA) PDP_FUZZ_INPUTS=$(FUZZ_INPUTS) $(PY) -m pytest tests/property/test_fuzz_decide.py -q -s -o timeout=0

clean:
	rm -rf $(BIN) $(VENV) $(MCP_SERVERS) .pytest_cache .mypy_cache .ruff_cache

# A policy repository's CI (docs/policy-lifecycle.md): the same checks on any bundle directory, plus
# the replay gate when a decision log is given: make policy-ci POLICY=rego REPLAY_LOG=.run/log JWKS=.run/keys/jwks.json
POLICY ?= rego
policy-ci: $(VENV)/.installed $(OPA) $(REGAL) ## a policy repo's CI: fmt, check, tests+coverage, Regal, replay gate (POLICY, REPLAY_LOG, JWKS)
	PDP_OPA_BIN=$(OPA) $(VENV)/bin/pdp policy ci $(POLICY) --coverage $(COVERAGE) --regal $(REGAL) \
	  $(if $(REPLAY_LOG),--replay-log $(REPLAY_LOG) --jwks $(JWKS) --replay-out $(or $(REPLAY_OUT),.run/replay))
