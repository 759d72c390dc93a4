"""The full fuzz run (`make fuzz`, docs/fuzzing.md): schemathesis against a live dashboard.

A fresh SQLite database in var/fuzz/ is seeded (manage.py seed_fuzz), gunicorn serves
tests/fuzz/wsgi.py on 127.0.0.1 (operations go to an in-memory broker: no Redis, no
node), and `st run` fuzzes every operation of /api/v1/schema/ twice: with the
customer's key and with the staff key. Any 5xx or any answer that does not match the
schema (status code, content type, headers, body) fails the run. The server's access
log counts the requests; reports go to var/fuzz/report-<role>/.

    python tests/fuzz/run.py [--max-examples N] [--seed S] [--workers W] [--port P]
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "var" / "fuzz"
# Every check but positive_data_acceptance: a request the schema allows may still be
# refused with a 400 for reasons no schema states (no such plan, a taken host name, a
# wrong password). negative_data_rejection stays: what the schema forbids is refused.
CHECKS = "all"
EXCLUDED_CHECKS = "positive_data_acceptance"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url, server, seconds=30):
    deadline = time.monotonic() + seconds
    while True:
        if server.poll() is not None:
            raise SystemExit(f"the fuzz server exited ({server.returncode}): see var/fuzz/")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.status
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=100,
                        help="cases per API operation and role (default 100)")
    parser.add_argument("--seed", type=int, default=None, help="schemathesis's random seed")
    parser.add_argument("--workers", type=int, default=2, help="st and gunicorn workers")
    parser.add_argument("--port", type=int, default=0, help="default: a free one")
    parser.add_argument("--roles", default="customer,staff")
    parser.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    args = parser.parse_args(argv)

    shutil.rmtree(DATA, ignore_errors=True)
    (DATA / "db").mkdir(parents=True)
    (DATA / "static").mkdir()  # STATIC_ROOT: whitenoise warns about a missing one
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "HOSTING_REDIS_URL", "SCHEMATHESIS_HOOKS")}
    env.update(HOSTING_DATA_DIR=str(DATA), DJANGO_SETTINGS_MODULE="tests.fuzz.settings",
               FUZZ_SEEDED=str(DATA / "seeded.json"), PYTHONPATH=str(ROOT))
    py = sys.executable
    subprocess.run([py, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([py, "manage.py", "seed_fuzz", "--out", env["FUZZ_SEEDED"]], cwd=ROOT,
                   env=env, check=True)
    seeded = json.loads(Path(env["FUZZ_SEEDED"]).read_text())

    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    access_log = DATA / "access.log"
    server = subprocess.Popen(
        [py, "-m", "gunicorn", "tests.fuzz.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", str(args.workers), "--timeout", "60", "--access-logfile", str(access_log),
         # No 414/431 from gunicorn's own line and header limits: a long query reaches the
         # dashboard, as it does in-process (the limits are the server's, not the API's).
         "--limit-request-line", "0", "--limit-request-field_size", "0",
         "--access-logformat", '%(s)s "%(r)s"', "--error-logfile", str(DATA / "server.log")],
        cwd=ROOT, env=env)
    results = {}
    try:
        wait_for(base + "/api/v1/schema/", server)
        st = str(Path(py).with_name("st"))
        for role in args.roles.split(","):
            command = [st, "run", base + "/api/v1/schema/",
                       "-H", f"Authorization: Token {seeded['keys'][role]}",
                       "--checks", CHECKS, "--exclude-checks", EXCLUDED_CHECKS,
                       "--max-examples", str(args.max_examples),
                       "--workers", str(args.workers), "--phases", args.phases,
                       "--report", "junit,ndjson", "--report-dir", str(DATA / f"report-{role}"),
                       "--suppress-health-check", "all", "--continue-on-failure"]
            if args.seed is not None:
                command += ["--seed", str(args.seed)]
            print(f"== {role}: {' '.join(command[:3])} ...", flush=True)
            hooks_env = dict(env, SCHEMATHESIS_HOOKS="tests.fuzz.hooks")
            results[role] = subprocess.run(command, cwd=ROOT, env=hooks_env).returncode
    finally:
        server.terminate()
        server.wait(30)

    lines = access_log.read_text().splitlines()
    statuses = [line.split(" ", 1)[0] for line in lines]
    errors = [line for line in lines if line.startswith("5")]
    summary = {"requests": len(lines), "5xx": len(errors),
               "by_status": {s: statuses.count(s) for s in sorted(set(statuses))},
               "st_exit": results}
    (DATA / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    for line in errors[:20]:
        print("5xx:", line)
    return 0 if not errors and not any(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
