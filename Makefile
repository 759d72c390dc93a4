# Set-up and entry points. Every target installs what it needs on a fresh
# Debian 12 machine (run as root): `make run` and `make test` are all it takes.

# Debian's interpreter, not a per-user one (pyenv under /root): the web process
# runs as the unprivileged user 'hosting' and must be able to execute it.
PYTHON ?= /usr/bin/python3
WEB_USER := hosting
VENV := .venv
PY := $(CURDIR)/$(VENV)/bin/python
APT_PACKAGES := busybox-static psmisc procps iproute2 util-linux gcc libc6-dev python3-venv \
	python3-dev redis-server chromium nftables e2fsprogs xfsprogs debootstrap postgresql lxcfs systemd \
	rsync openssh-server openssh-client restic
VECTL := /usr/local/bin/vectl
STAMP := $(VENV)/.installed

.PHONY: deps criu spawner web-user run test bench fuzz loadtest FORCE

deps: $(STAMP) $(VECTL) web-user criu spawner

$(STAMP): requirements.txt Makefile
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	grep -qx 'home = $(patsubst %/,%,$(dir $(PYTHON)))' $(VENV)/pyvenv.cfg 2>/dev/null || rm -rf $(VENV)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# vectl runs the engine from this checkout with the project's interpreter.
# -I keeps the caller's PYTHONPATH and user site out of a root tool; -S skips
# site's .pth processing (a few ms of every call) and the venv's packages are
# put on sys.path directly.
$(VECTL): $(STAMP) FORCE
	site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	printf '#!%s -IS\nimport sys\nsys.path[:0] = ["%s", "%s"]\nfrom ve.cli import main\nsys.exit(main())\n' \
		"$(PY)" "$(CURDIR)" "$$site" > $@.tmp
	chmod 755 $@.tmp && mv $@.tmp $@

# CRIU for checkpoint/restore and migration: Debian 12's criu 3.17 fails on these
# kernels, so criu 4.2.x is built once from Debian unstable's source package into
# var/criu/bin/criu (the engine's default; VE_CRIU overrides it). The script returns at
# once when that binary reports 4.2 or newer; it never falls back to Debian 12's criu.
criu:
	@.ci/build-criu $(CURDIR)/var/criu

# The C program that starts a VE's init (ve/kernel/spawn_init.c), built into
# var/spawn/ under a name carrying its source's checksum (a start that finds no
# binary for its source builds it too).
spawner: $(STAMP)
	@$(PY) -c 'from ve.kernel import spawn_helper; spawn_helper.path()'

# The web server and housekeeping worker run as this system user, never as root.
web-user:
	@id -u $(WEB_USER) >/dev/null 2>&1 || useradd --system --no-create-home \
		--home-dir /nonexistent --shell /usr/sbin/nologin $(WEB_USER)
	@runuser -u $(WEB_USER) -- test -r $(CURDIR)/manage.py || { echo "user $(WEB_USER) cannot \
	read $(CURDIR) (the web process runs as $(WEB_USER)): put the checkout somewhere \
	world-readable such as /srv or /opt, not under /root" >&2; exit 1; }

# The whole product in the foreground: Redis, the root node workers, housekeeping
# + beat and the web server on 127.0.0.1:8000, with demo logins printed.
# `make run NODES=3` runs three nodes on this machine (README, "Several nodes");
# the count reaches runstack through the environment, never spliced into a command.
NODES ?= 1
export NODES

run: deps
	vectl template build busybox
	@# Each Debian takes about a minute the first time and needs Debian's mirror;
	@# without it the demo lacks that one (orders for it fail cleanly).
	@for t in debian-12 debian-13; do \
		vectl template list | grep -q "^$$t " || vectl template build $$t || \
		echo "warning: $$t was not built; the demo node cannot run it"; done
	$(PY) manage.py runstack --nodes "$$NODES"

# The linter (ruff.toml), everything on SQLite, then the dashboard's tests again
# on a throw-away PostgreSQL.
test: deps
	$(PY) -m ruff check .
	VE_TESTS_STRICT=1 $(PY) -m pytest tests -ra -p no:cacheprovider --ds=hosting.settings
	$(PY) tests/on_postgres.py

bench: deps
	$(PY) bench/run.py $(BENCH_ARGS)

# The full API fuzz run (docs/fuzzing.md): schemathesis with a customer's key and a staff
# key against a seeded throw-away database in var/fuzz/, served by gunicorn on 127.0.0.1.
# Its own virtualenv; no root, no Redis, no node, no vectl. FUZZ_ARGS="--max-examples 20".
FUZZ_VENV := .venv-fuzz
FUZZ_STAMP := $(FUZZ_VENV)/.installed

$(FUZZ_STAMP): requirements.txt
	@dpkg -s python3-venv >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; }
	test -x $(FUZZ_VENV)/bin/python || $(PYTHON) -m venv $(FUZZ_VENV)
	$(FUZZ_VENV)/bin/python -m pip install -q --upgrade pip
	$(FUZZ_VENV)/bin/python -m pip install -q -r requirements.txt
	touch $@

fuzz: $(FUZZ_STAMP)
	nice -n 10 $(FUZZ_VENV)/bin/python tests/fuzz/run.py $(FUZZ_ARGS)

# The dashboard under load (bench/load/run.py): locust, in its own virtualenv, against
# gunicorn with the production settings on a throw-away PostgreSQL cluster filled with
# 10 nodes, 10,000 VPSes, 2,000 customers and 30 days of usage; stand-in nodes finish
# operations. LOADTEST_ARGS="--users 10,50 --step-seconds 30 --scale 0.1".
LOAD_VENV := .venv-load
LOAD_STAMP := $(LOAD_VENV)/.installed

$(LOAD_STAMP): bench/load/requirements.txt
	test -x $(LOAD_VENV)/bin/python || $(PYTHON) -m venv $(LOAD_VENV)
	$(LOAD_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOAD_VENV)/bin/python -m pip install -q -r bench/load/requirements.txt
	touch $@

loadtest: deps $(LOAD_STAMP)
	$(PY) bench/load/run.py --locust $(LOAD_VENV)/bin/locust $(LOADTEST_ARGS)
