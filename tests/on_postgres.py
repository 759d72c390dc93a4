#!/usr/bin/env python3
"""Run the dashboard's tests once more on PostgreSQL (production's database).

Makes a throw-away cluster (initdb as the ``postgres`` system user, listening
on a Unix socket in a temporary directory only, trust for local
connections), runs pytest with DATABASE_URL pointing at it, then stops and
removes the cluster. Extra arguments go to pytest. Exits non-zero when
PostgreSQL is missing: `make deps` installs it.

    .venv/bin/python tests/on_postgres.py [pytest args...]
"""

import contextlib
import glob
import os
import shutil
import subprocess
import sys
import tempfile

# Tests with "live" in their name run the whole stack on its own SQLite: once is enough.
DEFAULT_ARGS = ["tests/hosting", "tests/api", "-k", "not live", "-q", "-p", "no:cacheprovider",
                "--ds=hosting.settings"]


def server_binaries():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        sys.exit("PostgreSQL is not installed (make deps installs the postgresql package)")
    return os.path.dirname(found[-1])


def as_postgres(argv, **kwargs):
    return subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, **kwargs)


@contextlib.contextmanager
def throwaway_cluster(settings="-c fsync=off"):
    """A running throw-away cluster, removed on leaving; yields the environment
    (PGHOST: its socket directory) to connect to it with ``postgres://postgres@/NAME``.
    ``settings``: the server's options (``-c name=value ...``); tests need no fsync."""
    binaries = server_binaries()
    top = tempfile.mkdtemp(prefix="hosting-pg-")
    data, socket_dir = os.path.join(top, "data"), os.path.join(top, "run")
    os.makedirs(socket_dir)
    for path in (top, socket_dir):  # the web user's processes connect too
        shutil.chown(path, "postgres")
        os.chmod(path, 0o755)
    try:
        as_postgres([f"{binaries}/initdb", "-D", data, "--auth=trust", "-U", "postgres",
                     "--no-sync"], stdout=subprocess.DEVNULL)
        as_postgres([f"{binaries}/pg_ctl", "-D", data, "-w", "-l", os.path.join(top, "log"),
                     "-o", f"-k {socket_dir} -c listen_addresses='' {settings}", "start"],
                    stdout=subprocess.DEVNULL)
        # libpq takes the socket directory from PGHOST when the URL names no host.
        yield dict(os.environ, PGHOST=socket_dir)
    finally:
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            as_postgres([f"{binaries}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
                        stdout=subprocess.DEVNULL)
        shutil.rmtree(top, ignore_errors=True)


def main():
    with throwaway_cluster() as env:
        env["DATABASE_URL"] = "postgres://postgres@/hosting_test"
        args = sys.argv[1:] or DEFAULT_ARGS
        return subprocess.run([sys.executable, "-m", "pytest", *args], env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
