#!/usr/bin/env python3
"""Evacuation of a node with N busybox VEs through the whole product: total time, downtimes.

The whole product with two nodes joined by a data-centre segment, started as the
tests start it (``tests.conftest.started_live_stack(nodes=2, dc=True)``: Redis,
both nodes' root workers, watchers and migration sshds, housekeeping with beat,
gunicorn, on throw-away state). The demo customer orders N busybox VPSes of
plan "VPS S" through the API while node 2 drains (as ``place_on`` in
tests/hosting/test_fleet_live.py does), so all land on node 1. Then node 2
goes online and staff call ``POST /api/v1/nodes/<id>/evacuate/``; the time runs
from that call until node 1 holds no VPS and every "migrate" operation is
final. Per VE it keeps what the engine's migrate returned (mode, downtime,
total, pre-copy, phases), kept in the operation's params and shown to staff
as the operation's ``move``; the bench reads them with the operations' times
from the database (Django ORM, in this process).

What the bench changes from the seed data, and why:

- The nodes' overcommit ratios (staff API, ``PATCH /api/v1/nodes/<id>/``), both
  nodes, only where too low: ``seed_demo`` leaves the defaults (CPU 4.0, disk
  1.0), with which a 2-CPU node takes 16 VPS S (half a CPU each, capped at 50%)
  and a 252 GiB disk 50 of 5 GiB, so 50 would not fit; the ratios are raised
  so that N VPS S fit on one node with a 25% margin (placement's sales and use
  rules both scale with the ratio). There is no per-customer VPS quota; the
  seed's IPv4 pool has 241 addresses (one per VPS), which is checked.
- Node 2 gets node 1's OS template cache (``StackNode.prepare_dirs``, what the
  stack does for a new node at start): a node reports the templates it has, and
  one that never built busybox "does not have OS template busybox", so no VPS
  could move there.
- ``VE_WATCH`` and ``VE_LXCFS`` default to off in this process, as the tests
  set them (the stack turns the watcher on for its nodes; LXCFS stays off).

Fails (exit 1) if a move failed or got stuck, a VE ends anywhere but node 2 or
does not run there, or anything is left behind (VE, namespace, cgroup, mount,
loop device, process). Writes bench/results/evacuation.json.

    .venv/bin/python bench/evacuation.py [--ves 50] [--parallel P] [--timeout 3600]
"""

import argparse
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import (RESULTS_DIR, cgroup_mounts, interrupts_as_exceptions, log,  # noqa: E402
                    percentile, require_root, uninterrupted, write_json)

PLAN, TEMPLATE = "VPS S", "busybox"
ROOM_MARGIN = Decimal("1.25")  # ratios leave a quarter more room than N VPSes need
RATIOS = ("ram_overcommit", "swap_overcommit", "cpu_overcommit", "disk_overcommit")
MAX_RATIO = Decimal("999.99")  # the model's DecimalField(5, 2)
FINAL = ("succeeded", "failed")


class BenchFailed(Exception):
    """The product did not do what the bench measures (a move failed, a VE is lost)."""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ves", type=int, default=50, help="busybox VPSes on the node")
    parser.add_argument("--parallel", type=int, default=None,
                        help="moves at once (default: the evacuate API's default)")
    parser.add_argument("--order-threads", type=int, default=4,
                        help="orders sent at once (the node creates them two at a time)")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds the ordering, and then the evacuation, may take")
    parser.add_argument("--output", default=str(RESULTS_DIR / "evacuation.json"))
    args = parser.parse_args(argv)
    require_root()
    if not shutil.which("redis-server"):
        sys.exit("the stack needs redis-server: run `make deps` first")
    # As tests/conftest.py's pytest_configure: the stack runs its own node watchers.
    os.environ.setdefault("VE_WATCH", "off")
    os.environ.setdefault("VE_LXCFS", "off")
    started = time.time()
    results = {"date": time.strftime("%Y-%m-%d %H:%M %Z"),
               "command": "python bench/evacuation.py "
                          + " ".join(argv if argv is not None else sys.argv[1:]),
               "config": vars(args), "engine": _engine(), "nproc": os.cpu_count(),
               "loadavg_before": _loadavg()}
    live, failure = None, None
    try:
        with interrupts_as_exceptions():
            # started_live_stack cleans up after errors only; seed_demo prints logins
            with _deferred_interrupts(), _stdout_to_stderr():
                live = started_live_stack_logged()
            _measure(live, args, results)
    except BenchFailed as exc:
        failure = str(exc)
    finally:
        with uninterrupted():
            results["cleanup_problems"] = _teardown(live)
    results["loadavg_after"] = _loadavg()
    results["wall_s"] = round(time.time() - started, 1)
    results["failure"] = failure
    if "summary" in results:
        print(table(results))
    write_json(args.output, results)
    log(f"results in {args.output}")
    if failure:
        log(f"FAILED: {failure}")
    return 1 if failure or results["cleanup_problems"] else 0


def started_live_stack_logged():
    from tests.conftest import started_live_stack
    log("starting the product: two nodes on a data-centre segment")
    began = time.monotonic()
    live = started_live_stack(nodes=2, dc=True)
    log(f"stack up in {time.monotonic() - began:.0f} s (data dir {live.data_dir})")
    return live


def _measure(live, args, results):
    """Order N VPSes on node 1, evacuate it to node 2, collect every move into ``results``."""
    staff, customer = live.api("admin"), live.api("demo")
    one, two = live.stack.nodes
    _django(live)
    results["ratios_raised"] = make_room(staff, args.ves)
    _check_addresses(staff, args.ves)
    set_states(staff, {one.name: "online", two.name: "draining"})
    results["ordering"] = order_all(live, customer, args)
    veids = results["ordering"]["veids"]
    _check_where(live, staff, veids, one)
    two.prepare_dirs(template_source=one.effective("VE_ROOT"))
    set_states(staff, {two.name: "online"})
    _wait_identities(staff, (one, two))
    since = time.time()
    try:
        results["evacuation"] = evacuate(live, staff, one, args)
    except BenchFailed:
        results["moves"] = collect_moves(staff, veids, since)  # what happened, for the JSON
        raise
    results["moves"] = collect_moves(staff, veids, since)
    results["summary"] = summarise(results, live)
    _check_moves(results["moves"], veids, two)
    _check_where(live, staff, veids, two)
    log("every VE runs on node 2")


# -- set-up -------------------------------------------------------------------

@contextlib.contextmanager
def _deferred_interrupts():
    """Hold SIGINT/SIGTERM/SIGHUP until the block is over, then raise KeyboardInterrupt:
    ``started_live_stack`` returns the stack (for us to stop) only once it is up."""
    caught = []

    def handler(signum, frame):
        caught.append(signum)
        log("interrupted: stopping once the stack is up")
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
    if caught:
        raise KeyboardInterrupt(f"signal {caught[0]}")


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send this process's stdout, and its children's, to stderr for the block
    (stdout carries the result table only)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _django(live):
    """Django in this process, on the stack's database (for what the API does not show)."""
    import django
    env = live.stack.env("web")
    os.environ.update({k: v for k, v in env.items() if k.startswith(("HOSTING_", "DJANGO_"))})
    django.setup()


def make_room(staff, count):
    """Raise the nodes' overcommit ratios (staff API) where ``count`` VPSes of PLAN would
    not fit on one node; return {node: {ratio: [old, new]}}."""
    from hosting.nodes.placement import demand
    from hosting.plans.models import Plan
    plan = Plan.objects.get(name=PLAN)
    raised = {}
    for node in staff.get("/api/v1/nodes/")["results"]:
        need = demand(plan, node["cpus"])  # (ram, swap, cpu, disk) of one VPS
        physical = (node["ram_bytes"], node["ram_bytes"], node["cpus"], node["disk_bytes"])
        patch = {}
        for field, per_ve, have in zip(RATIOS, need, physical):
            wanted = Decimal(count) * Decimal(per_ve) * ROOM_MARGIN / Decimal(have)
            wanted = min(MAX_RATIO, Decimal(math.ceil(wanted * 100)) / 100)
            if wanted > Decimal(node[field]):
                patch[field] = str(wanted)
        if patch:
            staff.patch(f"/api/v1/nodes/{node['id']}/", patch)
            raised[node["name"]] = {f: [node[f], v] for f, v in patch.items()}
            log(f"node {node['name']}: ratios raised {patch}")
    return raised


def _check_addresses(staff, count):
    free = {p["name"]: p["free"] for p in staff.get("/api/v1/ip-pools/")["results"]}
    if any(left < count for left in free.values()):
        raise BenchFailed(f"the IP pools have too few free addresses for {count} VPSes: {free}")


def set_states(staff, states):
    """Set nodes' states ({name: state}) through the staff API."""
    by_name = {n["name"]: n for n in staff.get("/api/v1/nodes/")["results"]}
    for name, state in states.items():
        staff.patch(f"/api/v1/nodes/{by_name[name]['id']}/", {"state": state})


def order_all(live, customer, args):
    """Order ``args.ves`` VPSes, a few requests at once; wait until all run."""
    log(f"ordering {args.ves} busybox VPSes on node 1")
    began = time.monotonic()
    hostnames = [f"evac-{i}.example.com" for i in range(args.ves)]
    with ThreadPoolExecutor(args.order_threads) as pool:
        ops = list(pool.map(lambda name: customer.post("/api/v1/environments/", {
            "plan": PLAN, "template": TEMPLATE, "hostname": name,
            "root_password": "correct-horse-1"}), hostnames))
    done = wait_all(customer, ops, began + args.timeout, "created")
    failed = [op for op in done if op["state"] != "succeeded"]
    if failed:
        raise BenchFailed(f"{len(failed)} orders failed, e.g. {failed[0]}; "
                          f"{live.logs('node-worker')[-2000:]}")
    took = time.monotonic() - began
    log(f"{len(done)} VPSes running after {took:.0f} s")
    return {"veids": sorted(op["veid"] for op in done), "wall_s": round(took, 1)}


def wait_all(api, ops, deadline, what):
    """Poll operations ``ops`` until all are final (BenchFailed at ``deadline``)."""
    pending, done = {op["id"]: op for op in ops}, []
    while pending:
        for op_id in list(pending):
            current = api.get(f"/api/v1/operations/{op_id}/")
            if current["state"] in FINAL:
                done.append(current)
                del pending[op_id]
        if pending and time.monotonic() > deadline:
            raise BenchFailed(f"{len(pending)} operations not final at the deadline")
        if pending:
            log(f"  {len(done)}/{len(ops)} {what}")
            time.sleep(2)
    return done


def _wait_identities(staff, nodes, timeout=60):
    """Until every node reports its migration address and the busybox template (a node
    takes a VPS only then; its chores worker reports both every few heartbeats)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = {n["name"]: n for n in staff.get("/api/v1/nodes/")["results"]}
        if all(rows[n.name]["migrate_address"] and TEMPLATE in rows[n.name]["templates"]
               for n in nodes):
            return
        if time.monotonic() > deadline:
            seen = [(n, r["migrate_address"], r["templates"]) for n, r in rows.items()]
            raise BenchFailed(f"the nodes did not report migration identities and templates: "
                              f"{seen}")
        time.sleep(1)


# -- the evacuation -----------------------------------------------------------

def evacuate(live, staff, node, args):
    """Evacuate ``node`` through the API; return when it is empty, every move is final
    and the evacuation says it is finished (a step of the beat after the last move)."""
    row = next(n for n in staff.get("/api/v1/nodes/")["results"] if n["name"] == node.name)
    body = {} if args.parallel is None else {"parallel": args.parallel}
    log(f"evacuating {node.name} ({row['environments']} VPSes)")
    started_at, began = time.time(), time.monotonic()
    answer = staff.post(f"/api/v1/nodes/{row['id']}/evacuate/", body)
    deadline, last_log, empty = began + args.timeout, 0.0, None
    while True:
        current = staff.get(f"/api/v1/nodes/{row['id']}/")
        unfinished = _unfinished_moves(staff)
        plan = current["evacuation"]
        if empty is None and current["environments"] == 0 and not unfinished:
            empty = time.monotonic() - began
            log(f"{node.name} empty, every move final, after {empty:.1f} s")
        if empty is not None and plan.get("finished"):
            break
        if plan.get("stuck") and not unfinished:
            raise BenchFailed(f"the evacuation is stuck: {plan['stuck']}")
        if time.monotonic() > deadline:
            raise BenchFailed(f"{current['environments']} VPSes still on {node.name} after "
                              f"{args.timeout:.0f} s; stuck: {plan.get('stuck')}")
        if time.monotonic() - last_log > 10 and empty is None:
            log(f"  {current['environments']} VPSes left, {unfinished} moves under way")
            last_log = time.monotonic()
        time.sleep(0.5)
    finished = time.monotonic() - began
    log(f"the evacuation says it is finished after {finished:.1f} s")
    return {"parallel": answer["evacuation"]["parallel"], "started_at": started_at,
            "wall_s": round(empty, 2), "finished_s": round(finished, 2),
            "node": current["evacuation"]}


def _unfinished_moves(staff):
    return sum(staff.get(f"/api/v1/operations/?kind=migrate&state={state}")["count"]
               for state in ("queued", "running"))


def collect_moves(staff, veids, since):
    """Every move of the VPSes since ``since`` (epoch s): the engine's result from the
    operation's params (ORM), and what staff read through the API."""
    from hosting.operations.models import Operation
    ops = Operation.objects.filter(kind=Operation.Kind.MIGRATE, environment__veid__in=veids,
                                   created__gte=datetime.fromtimestamp(since).astimezone()) \
        .select_related("environment").order_by("created")
    moves = []
    for op in ops:
        result = op.params.get("result") or {}
        shown = staff.get(f"/api/v1/operations/{op.pk}/")
        moves.append({
            "veid": op.environment.veid, "operation": str(op.pk), "state": op.state,
            "from": op.params.get("from"), "to": op.params.get("to"),
            "mode": result.get("mode"), "why_offline": result.get("why_offline"),
            "downtime_s": result.get("downtime_s"), "total_s": result.get("total_s"),
            "precopy_s": result.get("precopy_s"), "phases_s": result.get("phases_s"),
            "queued_s": _seconds(op.created, op.started),
            "operation_s": _seconds(op.started, op.finished),
            "created_at": op.created.timestamp(),
            "finished_at": op.finished.timestamp() if op.finished else None,
            "started_at": op.started.timestamp() if op.started else None,
            "attempts": shown["attempts"], "message": shown["message"], "error": shown["error"]})
    return moves


def _seconds(start, end):
    return round((end - start).total_seconds(), 3) if start and end else None


# -- checks -------------------------------------------------------------------

def _check_moves(moves, veids, target):
    failed = [m for m in moves if m["state"] != "succeeded"]
    if failed:
        raise BenchFailed(f"{len(failed)} moves failed: " + "; ".join(
            f"VE {m['veid']}: {m['error']}" for m in failed[:5]))
    missing = set(veids) - {m["veid"] for m in moves}
    if missing:
        raise BenchFailed(f"VEs never moved: {sorted(missing)}")
    elsewhere = [m for m in moves if m["to"] != target.name]
    if elsewhere:
        raise BenchFailed(f"moves to other nodes than {target.name}: {elsewhere[:3]}")


def _check_where(live, staff, veids, node):
    """Every VE of ``veids`` is on ``node`` and running, by the API and by both engines."""
    wrong = []
    for veid in veids:
        row = staff.get(f"/api/v1/environments/{veid}/")
        held = {n.name: live.engine(n).status(veid).state for n in live.stack.nodes
                if live.engine(n).layout.conf(veid).exists()}
        if row["node"] != node.name or row["actual_state"] != "running" or \
                held != {node.name: "running"}:
            wrong.append(f"VE {veid}: API {row['node']}/{row['actual_state']}, nodes {held}")
    if wrong:
        raise BenchFailed(f"{len(wrong)} VEs not running on {node.name} alone: "
                          + "; ".join(wrong[:5]))


# -- figures ------------------------------------------------------------------

def summarise(results, live):
    """The figures the issue asks for, and what they depend on."""
    from django.conf import settings

    from hosting.nodes import evacuation
    moves = [m for m in results["moves"] if m["state"] == "succeeded"]
    downtimes = [m["downtime_s"] for m in moves if m["downtime_s"] is not None]
    totals = [m["total_s"] for m in moves if m["total_s"] is not None]
    worst = max(moves, key=lambda m: m["downtime_s"] or 0, default=None)
    started = results["evacuation"]["started_at"]
    last = max((m["finished_at"] for m in moves if m["finished_at"]), default=None)
    return {
        "ves": len(results["ordering"]["veids"]), "moves": len(results["moves"]),
        "parallel": results["evacuation"]["parallel"],
        "parallel_max": evacuation.MAX_PARALLEL,
        "worker_slots": live.ops_concurrency,  # moves run in the source node's worker
        "most_at_once": _most_at_once(moves),
        "beat_s": settings.CELERY_BEAT_SCHEDULE["move-batches"]["schedule"],
        "evacuation_s": results["evacuation"]["wall_s"],
        "marked_finished_s": results["evacuation"]["finished_s"],
        "last_move_done_s": round(last - started, 2) if last else None,
        "downtime_max_s": worst["downtime_s"] if worst else None,
        "downtime_max_veid": worst["veid"] if worst else None,
        "downtime_p50_s": _p(downtimes, 50), "downtime_p90_s": _p(downtimes, 90),
        "total_p50_s": _p(totals, 50), "total_max_s": max(totals, default=None),
        "queued_p50_s": _p([m["queued_s"] for m in moves if m["queued_s"] is not None], 50),
        "live": sum(m["mode"] == "live" for m in moves),
        "offline": sum(m["mode"] == "offline" for m in moves),
        "other_modes": sorted({str(m["mode"]) for m in moves} - {"live", "offline"}),
        "why_offline": sorted({m["why_offline"] for m in moves if m["why_offline"]}),
    }


def _p(values, q):
    return round(percentile(values, q), 3) if values else None


def _most_at_once(moves):
    """The most moves whose operations ran at the same moment."""
    events = sorted([(m["started_at"], 1) for m in moves if m["started_at"]]
                    + [(m["finished_at"], -1) for m in moves if m["finished_at"]])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def table(results):
    s = results["summary"]
    rows = [
        ("VEs evacuated (busybox, plan VPS S)", f"{s['ves']}"),
        ("parallel moves asked (evacuate API; max)", f"{s['parallel']} ({s['parallel_max']})"),
        ("most moves running at once (source worker slots)",
         f"{s['most_at_once']} ({s['worker_slots']})"),
        ("beat that queues the next moves", f"{s['beat_s']:g} s"),
        ("**evacuation: call to node empty, every move final**", f"**{s['evacuation_s']} s**"),
        ("  of which until the last move finished", f"{s['last_move_done_s']} s"),
        ("evacuation marked finished (next beat)", f"{s['marked_finished_s']} s"),
        ("**worst VE's downtime**",
         f"**{_fmt(s['downtime_max_s'])}** (VE {s['downtime_max_veid']})"),
        ("downtime p50 (p90)", f"{_fmt(s['downtime_p50_s'])} ({_fmt(s['downtime_p90_s'])})"),
        ("total per move p50 (max)", f"{_fmt(s['total_p50_s'])} ({_fmt(s['total_max_s'])})"),
        ("wait in the node's queue p50", _fmt(s["queued_p50_s"])),
        ("live / offline moves", f"{s['live']} / {s['offline']}"
                                 + (f" (+ {s['other_modes']})" if s["other_modes"] else "")),
    ]
    lines = ["| figure | value |", "|---|---:|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    if s["why_offline"]:
        lines.append(f"\nwhy offline: {'; '.join(s['why_offline'])}")
    return "\n".join(lines)


def _fmt(seconds):
    return "-" if seconds is None else f"{seconds:.2f} s"


# -- tear-down ----------------------------------------------------------------

def _teardown(live):
    """Stop the stack, remove everything (LiveStack.stop) and say what is left."""
    if live is None:
        return []
    log("stopping the product and removing every VE")
    with contextlib.suppress(Exception):
        from django.db import connections
        connections.close_all()  # before the data dir goes
    problems = []
    marker = f"HOSTING_DATA_DIR={live.data_dir}".encode()
    netns = {n.netns for n in live.stack.nodes} | {live.stack.dc_netns}
    dirs = (str(live.data_dir), str(live.ve_root))
    try:
        live.stop()
    except Exception as exc:  # keep going: what is left is reported below
        problems.append(f"LiveStack.stop: {exc}")
    problems += _leftovers(marker, netns, dirs, live.cgroup_top)
    for problem in problems:
        log(f"cleanup: {problem}")
    return problems


def _leftovers(marker, netns, dirs, cgroup_top):
    """What the stack left: processes, namespaces, cgroups, mounts, loop devices, files.
    Mounts and loop devices are also undone, so that the machine is clean again."""
    from hosting import datacentre
    problems = []
    deadline = time.monotonic() + 20  # a watcher told to stop may take a moment
    while _processes(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    problems += [f"process {pid} left: {cmd}" for pid, cmd in _processes(marker)]
    problems += [f"network namespace {n} left" for n in sorted(netns & datacentre.namespaces())]
    problems += [f"cgroup {m}/{cgroup_top} left" for m in cgroup_mounts()
                 if os.path.isdir(os.path.join(m, cgroup_top))]
    problems += _unmount_and_detach(dirs)
    problems += [f"{d} left" for d in dirs if os.path.exists(d)]
    return problems


def _processes(marker):
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append((int(proc.name), (proc / "cmdline").read_bytes()
                              .replace(b"\0", b" ").decode(errors="replace")))
    return found


def _unmount_and_detach(dirs):
    """Unmount what is mounted below ``dirs`` and detach loop devices on their files."""
    problems = []
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if line.split()[4].startswith(dirs)]
    for target in sorted(mounts, key=len, reverse=True):
        problems.append(f"mount {target} left")
        subprocess.run(["umount", "-l", target])
    for name in os.listdir("/sys/block"):
        with contextlib.suppress(OSError):
            backing = Path(f"/sys/block/{name}/loop/backing_file").read_text().strip()
            if backing.startswith(dirs):
                problems.append(f"loop device {name} left ({backing})")
                subprocess.run(["losetup", "-d", f"/dev/{name}"])
    return problems


def _engine():
    """Which code was measured: HEAD and the files changed since (the working tree runs)."""
    def git(*argv):
        return subprocess.run(["git", "-C", str(ROOT), *argv], capture_output=True,
                              text=True).stdout
    return {"git_head": git("rev-parse", "--short", "HEAD").strip(),
            "changed": sorted(line[3:] for line in git("status", "--short", "ve", "hosting")
                              .splitlines())}


def _loadavg():
    return float(Path("/proc/loadavg").read_text().split()[0])


if __name__ == "__main__":
    sys.exit(main())
