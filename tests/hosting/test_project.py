"""The dashboard project shell loads and passes Django's system checks."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_manage_py_check_passes(tmp_path):
    env = dict(os.environ, HOSTING_DATA_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_models_and_migrations_agree(tmp_path):
    """Every model change has its migration (makemigrations --check finds nothing)."""
    env = dict(os.environ, HOSTING_DATA_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
