"""The criu that checkpoint/restore runs: `make criu` built it, and it works on this kernel.

`make deps` (so `make test`) builds criu 4.2.x from Debian unstable's source package into
var/criu/bin/criu (.ci/build-criu); the engine runs that one unless $VE_CRIU names
another (``ve.paths.criu_binary``). A missing binary fails here rather than skipping:
it means the build did not run or did not finish, not that the host lacks a feature.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

from ve import paths

from .conftest import require_root

ROOT_DIR = Path(__file__).resolve().parents[2]
MIN_VERSION = (4, 2)  # Debian 12's 3.17 fails on these kernels (../shared/CRIU.md)
# What the engine's dump and restore rely on: the nftables network lock (nodes have no
# iptables), VEs' user namespaces, and restored VEs' time namespaces.
FEATURES = ["network_lock_nftables", "userns", "timens"]


def _criu():
    binary = paths.criu_binary()
    if not os.access(binary, os.X_OK):
        pytest.fail(f"no criu at {binary}: `make criu` builds it (make deps runs it)")
    return binary


def _run(*argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_the_engine_runs_the_checkouts_criu_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv(paths.CRIU_ENV, raising=False)
    assert paths.criu_binary() == str(ROOT_DIR / "var" / "criu" / "bin" / "criu")
    monkeypatch.setenv(paths.CRIU_ENV, "/opt/criu/sbin/criu")
    assert paths.criu_binary() == "/opt/criu/sbin/criu"


def test_criu_is_new_enough():
    result = _run(_criu(), "--version")
    assert result.returncode == 0, result.stderr
    found = re.search(r"^Version:\s*(\d+)\.(\d+)", result.stdout, re.M)
    assert found, f"no version in {result.stdout!r}"
    assert (int(found[1]), int(found[2])) >= MIN_VERSION, result.stdout


def test_criu_check_passes():
    require_root()
    result = _run(_criu(), "check")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Looks good" in output, output


@pytest.mark.parametrize("feature", FEATURES)
def test_criu_has_what_the_engine_uses(feature):
    require_root()
    result = _run(_criu(), "check", "--feature", feature)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_checkouts_criu_carries_our_patches_as_they_are(monkeypatch):
    """.ci/build-criu builds again when .ci/criu-patches changes: the binary's SOURCE
    names the patch set it was built with (a debian-13 VE needs the exe-link one)."""
    import hashlib
    monkeypatch.delenv(paths.CRIU_ENV, raising=False)
    _criu()
    patches = sorted((ROOT_DIR / ".ci" / "criu-patches").glob("*.patch"))
    assert [p.name for p in patches] == ["exe-link-o-path.patch"]
    patch_set = hashlib.sha256(b"".join(p.read_bytes() for p in patches)).hexdigest()[:16]
    source = (Path(paths.criu_binary()).parents[1] / "SOURCE").read_text()
    assert f" patches {patch_set} (exe-link-o-path.patch)" in source, source

