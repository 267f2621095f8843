# Kleidia entry points. See README.md.
SHELL := /bin/bash

.PHONY: help demo test yubico-suite lint fmt bench build deps stack-up stack-down

help:
	@echo "make demo   run Kleidia on http://127.0.0.1:8080 with a software YubiKey (Ctrl-C stops it)"
	@echo "make test   bring up PostgreSQL, OpenBao and pcscd, run the whole test suite"
	@echo "make yubico-suite  Yubico's PIV device tests (ykman 5.9.1) against the software YubiKey, firmware 5.4.3 and 5.7.1"
	@echo "make lint   rustfmt check and clippy with warnings as errors"
	@echo "make bench  throughput and memory benchmarks"

demo:
	scripts/demo.sh

test:
	scripts/test.sh

yubico-suite: deps
	scripts/yubico-suite.sh

lint: deps
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all

bench:
	scripts/bench.sh

build: deps
	cargo build --workspace --bins --locked

deps:
	scripts/install-deps.sh

stack-up: deps
	scripts/stack.sh up .stack

stack-down:
	scripts/stack.sh down .stack
