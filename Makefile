# Kleidia entry points. See README.md.
SHELL := /bin/bash

.PHONY: ha ha-down ha-test ha-bench
.PHONY: help demo test yubico-suite lint fmt bench bench-smoke fuzz build deps stack-up stack-down image image-test kube-validate

help:
	@echo "make demo   run Kleidia on http://127.0.0.1:8080 with a software YubiKey (Ctrl-C stops it)"
	@echo "make test   bring up PostgreSQL, OpenBao and pcscd, run the whole test suite"
	@echo "make yubico-suite  Yubico's PIV device tests (ykman 5.9.1) against the software YubiKey, firmware 5.4.3 and 5.7.1"
	@echo "make lint   rustfmt check, clippy with warnings as errors, cargo-deny"
	@echo "make bench  every hot path next to its raw engine: target/bench/report.md (issue 17)"
	@echo "make bench-smoke  the seconds-long bench smoke make test runs"
	@echo "make image  container images (podman, Debian base by mmdebstrap); docs/deploy.md"
	@echo "make image-test  build the images and start them as the cluster would (in make test)"
	@echo "make kube-validate  render, schema-check, checkov and invariants of kustomize/ (in make test)"
	@echo "make ha     three replicas behind HAProxy, a 3-node OpenBao Raft cluster, PostgreSQL, the license service (docs/ha.md)"
	@echo "make ha-test  failover under load: replica, active OpenBao node and license service killed and brought back"
	@echo "make ha-bench  device-list and sign-in throughput with 1, 2 and 3 replicas (target/bench/ha-report.md)"
	@echo "make fuzz   run each cargo-fuzz target for FUZZ_SECONDS (60) and minimise the corpus"
	@echo "make load   200 browsing sessions, 20 enrollments and 50 PIN changes at once (make test runs a slice)"
	@echo "make faults every (step, fault) cell of the fault matrix, docs/reliability.md (make test runs a slice)"

demo:
	scripts/demo.sh

test:
	scripts/test.sh

yubico-suite: deps
	scripts/yubico-suite.sh

lint:
	scripts/install-deps.sh lint
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	scripts/deny.sh

fmt:
	cargo fmt --all

bench:
	scripts/bench.sh

bench-smoke:
	scripts/bench.sh --smoke

fuzz:
	scripts/fuzz.sh

build: deps
	cargo build --workspace --bins --locked

deps:
	scripts/install-deps.sh

stack-up: deps
	scripts/stack.sh up .stack

stack-down:
	scripts/stack.sh down .stack

image: deps
	scripts/image.sh

image-test: deps
	scripts/image-test.sh

kube-validate: deps
	scripts/kube-validate.sh

# High availability on one machine (docs/ha.md). State in .ha/ (git-ignored).
ha: deps
	cargo build --workspace --bins --locked
	scripts/ha.sh up .ha
	@echo "make ha-down stops it"

ha-down:
	scripts/ha.sh down .ha

ha-test: deps
	scripts/ha-test.sh

ha-bench: deps
	scripts/ha-bench.sh
# --- issue 16 §1/§2: the fault matrix and the load test (scripts/faults.sh) ---
.PHONY: load faults
load:
	scripts/faults.sh load

faults:
	scripts/faults.sh faults
