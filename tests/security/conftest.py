"""Security fixtures: the engine fixtures, and the escape probe built once per session."""

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.engine.conftest import engine, template_cache  # noqa: F401  (re-exported fixtures)

PROBE_SOURCE = Path(__file__).with_name("escape_probe.c")


@pytest.fixture(scope="session")
def probe_binary(tmp_path_factory):
    """The static escape probe (tests/security/escape_probe.c), compiled with gcc."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is missing: `make test` installs gcc and libc6-dev")
    target = tmp_path_factory.mktemp("probe") / "probe"
    built = subprocess.run([gcc, "-static", "-O2", "-Wall", "-o", str(target), str(PROBE_SOURCE)],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, f"cannot build the escape probe:\n{built.stderr}"
    return target.read_bytes()
