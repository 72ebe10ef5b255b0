# The two commands of the README: `make run` and `make test`. Everything builds one shared .venv.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch: CPython 3.11 wheels of these releases are on this kind of machine's disk (README, "Platforms and versions").
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
COMPAT_PYTHONS := $(wildcard $(HOME)/.pyenv/versions/3.10*/bin/python3.10 /usr/bin/python3.10 \
                             $(HOME)/.pyenv/versions/3.13*/bin/python3.13 /usr/bin/python3.13)
PREFIX ?= /opt/syftd
DESTDIR ?=

.PHONY: help venv run test test-long sysdeps check lint bench soak test-compat clean proto flower-env

help:
	@echo "make run    - start a local PyGrid-compatible node and the daemon; watch cycles complete"
	@echo "make test   - the system packages the tests need (make sysdeps), make check, then the whole test suite"
	@echo "make sysdeps - check those packages; install them when root with apt-get, else print the command"
	@echo "make check  - ruff and mypy"
	@echo "make test-long - the tests that wait out a peer's timer (over a minute each; CI runs them)"
	@echo "make bench  - benchmarks under tests/bench (figures and ratios)"
	@echo "make soak   - the chaos soak for SOAK_MINUTES (default 30) and its totals (README, \"Soak\")"
	@echo "make test-compat - torch-free tests under Python 3.10 and 3.13 when present"
	@echo "make flower-env - .venv-flower: flwr (FLWR_SPEC, default flwr==1.42.0) for flower jobs and their tests"
	@echo "make install-systemd | install-launchd - install as a system service (PREFIX, DESTDIR; README, "Install as a service")"
	@echo "make install-systemd-user | install-launchd-agent - install for the current user only"

venv: $(STAMP)

# The first build takes a minute or two and 5.5 GB: each step says what it does, and pip shows its downloads.
$(STAMP): pyproject.toml
	@echo "== [1/4] $(VENV): a virtual environment from $(PYTHON)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "== [2/4] pip: upgrading"
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "== [3/4] $(TORCH_PINS): the large download, most of the 5.5 GB"
	$(BIN)/python -m pip install $(TORCH_PINS)
	@echo "== [4/4] syftd (editable) with the train, test and dev extras"
	$(BIN)/python -m pip install -e '.[train,test,dev]'
	@touch $@
	@echo "== $(VENV) is ready"

run: $(STAMP)
	$(BIN)/python -m syftd.demo

check: $(STAMP)
	$(BIN)/ruff check syftd tests
	$(BIN)/ruff format --check syftd tests
	$(BIN)/mypy

lint: $(STAMP)
	$(BIN)/ruff check --fix syftd tests
	$(BIN)/ruff format syftd tests

# The system packages first, so a machine without them stops in seconds, before any venv is built.
sysdeps:
	@scripts/sysdeps

test: sysdeps
	@$(MAKE) --no-print-directory check
	$(BIN)/python -m pytest --durations=15 --ignore=tests/bench -m "not long" $(PYTEST_ARGS)

# Tests that wait out a peer's fixed timer (a minute or more each), kept out of make test's 10 minutes.
test-long: sysdeps $(STAMP)
	$(BIN)/python -m pytest --ignore=tests/bench -m long $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m pytest tests/bench -s --timeout=900 $(PYTEST_ARGS)

# The chaos soak (README, "Soak"): SOAK_MINUTES of random faults, then the ledger and the totals.
# SOAK_SEED repeats a run's fault draws; SOAK_SKIP=kind,kind leaves kinds out.
SOAK_MINUTES ?= 30
soak: $(STAMP)
	SOAK_MINUTES=$(SOAK_MINUTES) $(BIN)/python -m pytest tests/e2e/test_soak.py -s -p no:cacheprovider $(PYTEST_ARGS)

# The torch-free tests under the other Python versions present on this machine (the 3.10 floor is real).
test-compat:
	@set -e; failed=; if [ -z "$(strip $(COMPAT_PYTHONS))" ]; then echo "test-compat: no Python 3.10 or 3.13 here"; exit 0; fi; \
	for py in $(COMPAT_PYTHONS); do \
	  v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])'); env=.venv-$$v; \
	  test -x $$env/bin/python || $$py -m venv $$env; \
	  $$env/bin/python -m pip install --quiet --upgrade pip; \
	  $$env/bin/python -m pip install --quiet -e '.[test,node]'; \
	  echo "== Python $$v"; \
	  $$env/bin/python -m pytest -m "not torch and not long" -p no:cacheprovider tests --ignore=tests/bench --ignore=tests/service $(PYTEST_ARGS) \
	    || failed="$$failed $$v"; \
	done; \
	if [ -n "$$failed" ]; then echo "test-compat: failures under Python$$failed"; exit 1; fi

# The separate environment flower-supernode runs from (README, "Flower"): flwr pinned to the SuperLink's
# major.minor. Separate because flwr 1.42 needs protobuf < 7 and syftd needs >= 7. The tests build it too.
FLWR_SPEC ?= flwr==1.42.0
flower-env:
	contrib/flower/make-venv.sh .venv-flower '$(FLWR_SPEC)'

# The PyGrid wire schema (syftd/grid/syft.proto) -> syftd/grid/syft_pb2.py(i); needs the runtime's major (7).
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. syftd/grid/syft.proto

clean:
	rm -rf $(VENV) .venv-3.* .venv-flower .mypy_cache .pytest_cache .ruff_cache

# ------------------------------------------------------------------ service install (README, "Install as a service")
# The daemon gets its own virtual environment under PREFIX (default /opt/syftd), built from
# SERVICE_PYTHON; DESTDIR stages everything under another root for packagers (paths written into the
# files stay PREFIX and /etc). SERVICE_EXTRAS=train adds torch, which the trainer needs to train;
# without it the daemon runs, watches conditions and answers `syftd status`, but cannot train.
SERVICE_PYTHON ?= /usr/bin/python3
SERVICE_EXTRAS ?=
SYSCONFDIR ?= /etc
SYSTEMD_UNITDIR ?= /etc/systemd/system
SYSUSERSDIR ?= /etc/sysusers.d
BINDIR ?= /usr/local/bin
LAUNCHD_DIR ?= /Library/LaunchDaemons
LAUNCHD_LOGDIR ?= /Library/Logs/syftd
USER_PREFIX ?= $(HOME)/.local/share/syftd/venv
USER_CONFDIR ?= $(HOME)/.config
SVC_ROOT := $(DESTDIR)$(PREFIX)
SVC_CONF := $(DESTDIR)$(SYSCONFDIR)/syftd
SVC_LIVE := $(if $(DESTDIR),,$(shell test -d /run/systemd/system && echo yes))

# Shell completions and the man page, generated from the argparse parser at build time (no run-time cost).
MANDIR ?= /usr/local/share/man
BASHCOMPDIR ?= /usr/local/share/bash-completion/completions
ZSHCOMPDIR ?= /usr/local/share/zsh/site-functions
FISHCOMPDIR ?= /usr/local/share/fish/vendor_completions.d
UDEVRULESDIR ?= /etc/udev/rules.d
CLI_DOCS := build/cli-docs
DOCS_PYTHON ?= $(SVC_ROOT)/bin/python

.PHONY: cli-docs install-cli-docs uninstall-cli-docs install-energy-rule uninstall-energy-rule

cli-docs:
	$(DOCS_PYTHON) tools/cli_docs.py $(CLI_DOCS)

install-cli-docs: cli-docs
	install -d -m 0755 $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	install -m 0644 $(CLI_DOCS)/syftd.1 $(DESTDIR)$(MANDIR)/man1/syftd.1
	install -m 0644 $(CLI_DOCS)/syftd.bash $(DESTDIR)$(BASHCOMPDIR)/syftd
	install -m 0644 $(CLI_DOCS)/_syftd $(DESTDIR)$(ZSHCOMPDIR)/_syftd
	install -m 0644 $(CLI_DOCS)/syftd.fish $(DESTDIR)$(FISHCOMPDIR)/syftd.fish

uninstall-cli-docs:
	rm -f $(DESTDIR)$(MANDIR)/man1/syftd.1 $(DESTDIR)$(BASHCOMPDIR)/syftd $(DESTDIR)$(ZSHCOMPDIR)/_syftd \
	  $(DESTDIR)$(FISHCOMPDIR)/syftd.fish

# energy_uj (powercap RAPL) is root-only on current kernels; the rule lets the syftd group read it.
install-energy-rule:
	install -d -m 0755 $(DESTDIR)$(UDEVRULESDIR)
	install -m 0644 systemd/70-syftd-energy.rules $(DESTDIR)$(UDEVRULESDIR)/70-syftd-energy.rules
	@if [ -n "$(SVC_LIVE)" ] && command -v udevadm >/dev/null; then \
	  udevadm control --reload && udevadm trigger --subsystem-match=powercap --action=add || true; fi

uninstall-energy-rule:
	rm -f $(DESTDIR)$(UDEVRULESDIR)/70-syftd-energy.rules

.PHONY: install-venv install-systemd uninstall-systemd install-systemd-user uninstall-systemd-user \
        install-launchd uninstall-launchd install-launchd-agent uninstall-launchd-agent

install-venv:
	@test -x $(SVC_ROOT)/bin/python || $(SERVICE_PYTHON) -m venv $(SVC_ROOT)
	@rm -rf build
	$(SVC_ROOT)/bin/python -m pip install --quiet --upgrade '.$(if $(SERVICE_EXTRAS),[$(SERVICE_EXTRAS)])'
	@if [ -n "$(DESTDIR)" ]; then \
	  grep -lI -- '$(SVC_ROOT)' $(SVC_ROOT)/bin/* $(SVC_ROOT)/pyvenv.cfg 2>/dev/null \
	    | xargs -r sed -i.bak -e 's|$(SVC_ROOT)|$(PREFIX)|g' && rm -f $(SVC_ROOT)/bin/*.bak $(SVC_ROOT)/*.bak; \
	fi

install-systemd: install-venv
	install -d -m 0755 $(DESTDIR)$(SYSTEMD_UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(SVC_CONF)
	sed -e 's|/opt/syftd|$(PREFIX)|g' -e 's|/etc/syftd|$(SYSCONFDIR)/syftd|g' systemd/syftd.service \
	  > $(DESTDIR)$(SYSTEMD_UNITDIR)/syftd.service && chmod 0644 $(DESTDIR)$(SYSTEMD_UNITDIR)/syftd.service
	install -m 0644 systemd/syftd.sysusers $(DESTDIR)$(SYSUSERSDIR)/syftd.conf
	install -d -m 0755 $(DESTDIR)$(BINDIR)
	@test -e $(DESTDIR)$(BINDIR)/syftd -o -L $(DESTDIR)$(BINDIR)/syftd || ln -s $(PREFIX)/bin/syftd $(DESTDIR)$(BINDIR)/syftd
	@if [ -e $(SVC_CONF)/syftd.toml ]; then echo "keeping the existing $(SVC_CONF)/syftd.toml"; else \
	  sed -e 's|^# token_file = .*|token_file = "$${CREDENTIALS_DIRECTORY}/token"|' config/syftd.toml \
	    > $(SVC_CONF)/syftd.toml.new && grep -q '^token_file = "$${CREDENTIALS_DIRECTORY}/token"' $(SVC_CONF)/syftd.toml.new \
	    && chmod 0644 $(SVC_CONF)/syftd.toml.new && mv $(SVC_CONF)/syftd.toml.new $(SVC_CONF)/syftd.toml \
	    && echo "installed $(SVC_CONF)/syftd.toml"; fi
	@test -e $(SVC_CONF)/token || (umask 077 && : > $(SVC_CONF)/token && echo "created an empty $(SVC_CONF)/token (0600)")
	@if [ -n "$(SVC_LIVE)" ]; then systemd-sysusers $(SYSUSERSDIR)/syftd.conf && systemctl daemon-reload; fi
	$(MAKE) --no-print-directory install-energy-rule install-cli-docs
	@echo "next: put the node's JWT into $(SYSCONFDIR)/syftd/token (if it needs one), edit $(SYSCONFDIR)/syftd/syftd.toml,"
	@echo "      then: systemctl enable --now syftd"

uninstall-systemd:
	@if [ -n "$(SVC_LIVE)" ]; then systemctl disable --now syftd.service || true; fi
	rm -f $(DESTDIR)$(SYSTEMD_UNITDIR)/syftd.service $(DESTDIR)$(SYSUSERSDIR)/syftd.conf
	$(MAKE) --no-print-directory uninstall-energy-rule uninstall-cli-docs
	@if [ "$$(readlink $(DESTDIR)$(BINDIR)/syftd)" = "$(PREFIX)/bin/syftd" ]; then rm -f $(DESTDIR)$(BINDIR)/syftd; fi
	@if [ -f $(SVC_ROOT)/pyvenv.cfg ]; then rm -rf $(SVC_ROOT); fi
	@if [ -n "$(SVC_LIVE)" ]; then systemctl daemon-reload; fi
	@echo "kept $(SYSCONFDIR)/syftd (config, token), /var/lib/syftd (state) and the syftd user"

install-systemd-user:
	$(MAKE) --no-print-directory install-venv PREFIX=$(USER_PREFIX) DESTDIR=
	install -d -m 0755 $(USER_CONFDIR)/systemd/user $(USER_CONFDIR)/syftd
	install -m 0644 systemd/syftd-user.service $(USER_CONFDIR)/systemd/user/syftd.service
	@if [ -e $(USER_CONFDIR)/syftd/syftd.toml ]; then echo "keeping the existing $(USER_CONFDIR)/syftd/syftd.toml"; else \
	  sed -e 's|^state_dir = .*|state_dir = "$${HOME}/.local/state/syftd"|' \
	      -e 's|^runtime_dir = .*|runtime_dir = "$${XDG_RUNTIME_DIR}/syftd"|' config/syftd.toml \
	    > $(USER_CONFDIR)/syftd/syftd.toml && echo "installed $(USER_CONFDIR)/syftd/syftd.toml"; fi
	$(MAKE) --no-print-directory install-cli-docs DESTDIR= DOCS_PYTHON=$(USER_PREFIX)/bin/python \
	  MANDIR=$(HOME)/.local/share/man BASHCOMPDIR=$(HOME)/.local/share/bash-completion/completions \
	  ZSHCOMPDIR=$(HOME)/.local/share/zsh/site-functions FISHCOMPDIR=$(USER_CONFDIR)/fish/completions
	-systemctl --user daemon-reload
	@echo "next: systemctl --user enable --now syftd  (and loginctl enable-linger $$USER to run while logged out)"

uninstall-systemd-user:
	-systemctl --user disable --now syftd.service
	rm -f $(USER_CONFDIR)/systemd/user/syftd.service
	@if [ -f $(USER_PREFIX)/pyvenv.cfg ]; then rm -rf $(USER_PREFIX); fi
	-systemctl --user daemon-reload

install-launchd: install-venv
	install -d -m 0755 $(DESTDIR)$(LAUNCHD_DIR) $(DESTDIR)$(LAUNCHD_LOGDIR) $(SVC_CONF)
	sed -e 's|/opt/syftd|$(PREFIX)|g' -e 's|/etc/syftd|$(SYSCONFDIR)/syftd|g' -e 's|/Library/Logs/syftd|$(LAUNCHD_LOGDIR)|g' \
	  launchd/org.openmined.syftd.plist > $(DESTDIR)$(LAUNCHD_DIR)/org.openmined.syftd.plist
	chmod 0644 $(DESTDIR)$(LAUNCHD_DIR)/org.openmined.syftd.plist
	@if [ -e $(SVC_CONF)/syftd.toml ]; then echo "keeping the existing $(SVC_CONF)/syftd.toml"; else \
	  sed -e 's|^state_dir = .*|state_dir = "/var/db/syftd"|' -e 's|^runtime_dir = .*|runtime_dir = "/var/run/syftd"|' \
	    config/syftd.toml > $(SVC_CONF)/syftd.toml && chmod 0644 $(SVC_CONF)/syftd.toml \
	    && echo "installed $(SVC_CONF)/syftd.toml"; fi
	$(MAKE) --no-print-directory install-cli-docs
	@echo "next: $(PREFIX)/bin/syftd check-config $(SYSCONFDIR)/syftd/syftd.toml   (launchd restarts a bad config every 60 s)"
	@echo "      sudo launchctl bootstrap system $(LAUNCHD_DIR)/org.openmined.syftd.plist"

uninstall-launchd:
	-test -n "$(DESTDIR)" || launchctl bootout system/org.openmined.syftd
	rm -f $(DESTDIR)$(LAUNCHD_DIR)/org.openmined.syftd.plist
	@if [ -f $(SVC_ROOT)/pyvenv.cfg ]; then rm -rf $(SVC_ROOT); fi
	@echo "kept $(SYSCONFDIR)/syftd, /var/db/syftd and $(LAUNCHD_LOGDIR)"

install-launchd-agent:
	$(MAKE) --no-print-directory install-venv PREFIX=$(USER_PREFIX) DESTDIR=
	install -d -m 0755 $(HOME)/Library/LaunchAgents $(HOME)/Library/Logs/syftd $(USER_CONFDIR)/syftd
	sed -e 's|@HOME@|$(HOME)|g' -e 's|@PREFIX@|$(USER_PREFIX)|g' launchd/org.openmined.syftd.agent.plist \
	  > $(HOME)/Library/LaunchAgents/org.openmined.syftd.plist
	@if [ -e $(USER_CONFDIR)/syftd/syftd.toml ]; then echo "keeping the existing $(USER_CONFDIR)/syftd/syftd.toml"; else \
	  sed -e 's|^state_dir = .*|state_dir = "$${HOME}/Library/Application Support/syftd"|' \
	      -e 's|^runtime_dir = .*|runtime_dir = "$${HOME}/Library/Caches/syftd"|' config/syftd.toml \
	    > $(USER_CONFDIR)/syftd/syftd.toml && echo "installed $(USER_CONFDIR)/syftd/syftd.toml"; fi
	@echo "next: launchctl bootstrap gui/$$(id -u) $(HOME)/Library/LaunchAgents/org.openmined.syftd.plist"

uninstall-launchd-agent:
	-launchctl bootout gui/$$(id -u)/org.openmined.syftd
	rm -f $(HOME)/Library/LaunchAgents/org.openmined.syftd.plist
	@if [ -f $(USER_PREFIX)/pyvenv.cfg ]; then rm -rf $(USER_PREFIX); fi
