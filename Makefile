# adaptive-workers: one entry point for developers and CI.
#
#   make check     everything CI runs, in this order: prereqs fmt-check lint
#                  test package lintian vm
#   make package   release build + man pages/completions + .deb + .rpm
#   make vm        the VM suite on the packages (tests/vm/run; see
#                  tests/vm/README.md for scenario selection and options)
#   make install   on a systemd host: build, install and enable the package;
#                  elsewhere (no systemd as PID 1): the demo, in a VM
#   make demo      boot the VM with the package installed, run tests/vm/demo.sh
#   make bench     the benchmark (tests/bench/run, 40-50 min; BENCHMARKS.md)
#   make prereqs   install what is missing (Debian packages, cargo tools)

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := check

CARGO ?= cargo
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
# Packages land here (crate-relative, whatever CARGO_TARGET_DIR says).
DEB_DIR := target/debian
RPM_DIR := target/generate-rpm
# Same files, higher version: what tests/vm/scenarios/90-upgrade.sh and
# 95-rpm.sh upgrade to.
UPGRADE_DIR := target/upgrade
ASSETS_DIR := target/assets
BIN := $(or $(CARGO_TARGET_DIR),target)/release/adaptive-workers
SHELL_SCRIPTS := .ci/run .ci/prereqs tests/vm/run tests/vm/summary \
	tests/vm/image/build tests/vm/image/customize tests/vm/image/aw-vm-boot \
	tests/vm/guest/*.sh tests/vm/scenarios/*.sh tests/vm/demo.sh \
	tests/bench/run tests/bench/guest/*.sh \
	packaging/debian/postinst packaging/debian/postrm

.PHONY: check prereqs fmt-check lint clippy shellcheck test package lintian vm demo bench install clean-vm

check: prereqs fmt-check lint test package lintian vm

prereqs:
	@.ci/prereqs

fmt-check:
	$(CARGO) fmt --all -- --check

lint: clippy shellcheck

clippy:
	$(CARGO) clippy --all-targets --locked -- -D warnings

shellcheck:
	shellcheck -x $(SHELL_SCRIPTS)
	shellcheck -s sh packaging/rpm/*.sh

test:
	$(CARGO) test --locked

# One release build feeds both packages. cargo-deb empties target/debian on
# every run, so the upgrade packages are built first, elsewhere.
package:
	$(CARGO) build --release --locked
	rm -rf $(ASSETS_DIR) $(RPM_DIR) $(UPGRADE_DIR)
	mkdir -p $(RPM_DIR) $(UPGRADE_DIR)
	$(BIN) generate-assets $(ASSETS_DIR)
	$(CARGO) deb --no-build --locked --deb-version $(VERSION)-1+vmupgrade -o $(UPGRADE_DIR)/
	$(CARGO) generate-rpm -s 'release = "2.vmupgrade"' -o $(UPGRADE_DIR)/
	$(CARGO) deb --no-build --locked -o $(DEB_DIR)/
	$(CARGO) generate-rpm -o $(RPM_DIR)/
	@ls -l $(DEB_DIR)/*.deb $(RPM_DIR)/*.rpm

# Errors and warnings fail; every override is explained in
# packaging/debian/lintian-overrides. Informational tags are shown.
lintian: package
	lintian --display-info --fail-on error,warning $(DEB_DIR)/adaptive-workers_*.deb

vm: package
	tests/vm/run --no-build

demo: prereqs package
	tests/vm/run --no-build --demo

# Long (three configurations and the reaction trials in one VM boot), so
# never part of check. Results: target/bench/results.{md,json}.
bench: prereqs package
	tests/bench/run --no-build

# The daemon needs systemd as PID 1 and the unified cgroup v2 hierarchy with
# the memory controller; a host without them gets the demo in a VM instead.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
install: prereqs package
	@if [ "$$(cat /proc/1/comm)" = systemd ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then \
		$(SUDO) apt-get install -y ./$(DEB_DIR)/adaptive-workers_*.deb && \
		$(SUDO) systemctl enable --now adaptive-workers && \
		systemctl --no-pager status adaptive-workers; \
	else \
		echo "This host's PID 1 is not systemd with cgroup v2 and the memory controller:"; \
		echo "running the demo in a VM instead (make demo)."; \
		tests/vm/run --no-build --demo; \
	fi

# The cached VM images (rebuilt on the next `make vm`).
clean-vm:
	rm -rf $${AW_VM_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/adaptive-workers/vm} target/vm
