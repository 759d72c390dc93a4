# Set-up and entry points. Every target installs what it needs on a fresh
# Debian 12 machine (run as root): `make run` and `make test` are all it takes.

PYTHON ?= python3
VENV := .venv
PY := $(CURDIR)/$(VENV)/bin/python
APT_PACKAGES := busybox-static psmisc procps iproute2 util-linux gcc libc6-dev python3-venv
VECTL := /usr/local/bin/vectl
STAMP := $(VENV)/.installed

.PHONY: deps run test bench FORCE

deps: $(STAMP) $(VECTL)

$(STAMP): requirements.txt
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# vectl runs the engine from this checkout with the project's interpreter.
# -I keeps the caller's PYTHONPATH and user site out of a root tool; -S skips
# site's .pth processing (a few ms of every call) and the venv's packages are
# put on sys.path directly.
$(VECTL): FORCE
	site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	printf '#!%s -IS\nimport sys\nsys.path[:0] = ["%s", "%s"]\nfrom ve.cli import main\nsys.exit(main())\n' \
		"$(PY)" "$(CURDIR)" "$$site" > $@.tmp
	chmod 755 $@.tmp && mv $@.tmp $@

# Until the dashboard lands, "the product" is the engine: build the busybox
# template, create and start demo VE 101, and show it.
run: deps
	vectl template build busybox
	vectl create 101 --template busybox --hostname demo1 --ram 256M --swap 0 \
		--cpus 1 --cpulimit 50 --cpuunits 1000 --numproc 256
	vectl start 101
	vectl list
	@echo "Demo VE 101 runs. Try: vectl exec 101 ps; vectl enter 101; vectl stop 101"

test: deps
	VE_TESTS_STRICT=1 $(PY) -m pytest tests -ra -p no:cacheprovider --ds=hosting.settings

bench: deps
	$(PY) bench/run.py $(BENCH_ARGS)
