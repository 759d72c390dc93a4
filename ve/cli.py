"""vectl: the operator's command line. The only module that prints or exits.

Exit codes: 0 ok, 1 unexpected error, 2 bad input, 3 not found, 4 exists,
5 wrong state or busy, 6 host resource failure, 7 unsupported; ``exec`` and
``enter`` exit with the command's own code.
"""

import gc
import json
import os
import sys

from . import validate
from .cliargs import REPEAT, HelpRequested, UsageError, Verb, parse
from .config import Limits, VEConfig
from .errors import InvalidConfig, VEError

LIMIT_OPTIONS = {
    "--ram": ("ram", True, "RAM limit, e.g. 256M"),
    "--swap": ("swap", True, "swap limit, e.g. 0 or 512M"),
    "--cpuunits": ("cpuunits", True, "CPU weight, 1000 = normal"),
    "--cpulimit": ("cpulimit", True, "% of one CPU, 0 = no limit"),
    "--cpus": ("cpus", True, "number of CPUs, 0 = all"),
    "--numproc": ("numproc", True, "maximum processes and threads"),
    "--rate": ("rate", True, "network rate limit each way in Mbit/s, 0 = none"),
    "--diskspace": ("diskspace", True, "disk size, e.g. 20G (grows live; shrinks when stopped)"),
    "--diskinodes": ("diskinodes", True, "files and directories the disk holds"),
    "--ioweight": ("ioweight", True, "relative I/O weight 10..1000, 0 = host default"),
    "--readbps": ("readbps", True, "disk read cap in bytes/s, e.g. 50M, 0 = none"),
    "--writebps": ("writebps", True, "disk write cap in bytes/s, 0 = none"),
    "--readiops": ("readiops", True, "disk read operations/s cap, 0 = none"),
    "--writeiops": ("writeiops", True, "disk write operations/s cap, 0 = none"),
    "--numconn": ("numconn", True, "tracked connections the VE may hold on the host, "
                                   "each way, 0 = no cap"),
    "--numnetif": ("numnetif", True, "network interfaces the VE may have, lo and eth0 "
                                     "included, 0 = no cap (default 128)"),
}
BOOT_OPTIONS = {
    "--onboot": ("onboot", True, "yes: the node starts it when it boots (default no)"),
    "--bootorder": ("bootorder", True, "0-1000: higher starts first at boot"),
}
NET_OPTIONS = {
    "--nameserver": ("nameserver", REPEAT, "DNS server for /etc/resolv.conf (repeatable)"),
    "--netmode": ("netmode", True, "routed (default) or bridged"),
    "--bridge": ("bridge", True, "bridge the host side joins (bridged mode)"),
}
VEID = (("veid", "one"),)

VERBS = {
    "template": Verb("build, import or list OS templates",
                     (("action", "one"), ("name", "optional"), ("tarball", "optional")), {
                         "--distribution": ("distribution", True, "import: e.g. debian"),
                         "--version": ("version", True, "import: e.g. 12"),
                         "--init": ("init", True, "import: the VE's init (default /sbin/init)"),
                         "--stop-signal": ("stop_signal", True,
                                           "import: what makes init halt (default SIGTERM)"),
                     "--cgroup2": ("cgroup2", False, "import: its init manages cgroups "
                                                     "(systemd): give it a cgroup2 tree"),
                     }),
    "create": Verb("create a VE from an OS template", VEID, {
        "--template": ("template", True, "OS template name"),
        "--hostname": ("hostname", True, "host name of the VE"),
        "--privileged": ("privileged", False,
                         "no user namespace: VE root is host root (staff only)"),
        "--ipadd": ("ipadd", REPEAT, "an IPv4 or IPv6 address of the VE (repeatable)"),
        "--layout": ("layout", True, "image (default: ext4, or xfs where ext4 cannot grow "
                                     "online), ext4, xfs, or dir (a directory: usage only)"),
        "--shared-template": ("shared_template", False,
                              "the template's files are one read-only layer shared by its "
                              "VEs (their page cache too); the image holds the VE's own"),
        **NET_OPTIONS, **BOOT_OPTIONS, **LIMIT_OPTIONS}, required=("--template", "--hostname")),
    "start": Verb("start a VE", VEID),
    "stop": Verb("shut a VE down cleanly (kill after --timeout)", VEID, {
        "--timeout": ("timeout", True, "seconds to wait for a clean stop (default 30)"),
        "--fast": ("fast", False, "kill at once")}),
    "restart": Verb("stop and start a VE", VEID, {
        "--timeout": ("timeout", True, "seconds to wait for a clean stop (default 30)")}),
    "destroy": Verb("stop a VE and remove all its files", VEID),
    "reinstall": Verb("give a VE a fresh root from a template, keeping its settings", VEID, {
        "--template": ("template", True, "OS template (default: the VE's own)"),
        "--keep-old": ("keep_old", True, "keep the old root as this directory of the new one"),
        "--timeout": ("timeout", True, "seconds to wait for a clean stop (default 30)")}),
    "checkpoint": Verb("save a running VE's processes to disk (criu)", VEID, {
        "--stop": ("stop", False, "then stop it (hibernate: its next start resumes it)")}),
    "restore": Verb("bring a stopped VE's checkpoint back", VEID),
    "hibernate": Verb("save a running VE to disk and stop it (checkpoint --stop)", VEID),
    "resume": Verb("bring a hibernated VE back (restore)", VEID),
    "snapshot": Verb("take, list, roll back to or delete snapshots of a VE's disk",
                     (("action", "one"), ("veid", "one"), ("name", "optional"))),
    "backup": Verb("back up a VE's disk to the node's restic repository, list, browse, "
                   "restore, check",
                   (("action", "one"), ("first", "optional"), ("second", "optional"),
                    ("third", "optional")), {
                       "--into": ("into", True, "restore-files: under this directory of the "
                                                "VE (default: in place)"),
                       "--keep-daily": ("keep_daily", True, "forget: daily backups kept"),
                       "--keep-weekly": ("keep_weekly", True, "forget: weekly backups kept"),
                       "--read-data": ("read_data", False, "check: read every byte too")}),
    "migrate": Verb("move a VE to another node (live, with criu, unless --offline)", VEID, {
        "--to": ("to", True, "the target node's migration sshd, host:port"),
        "--offline": ("offline", False, "stop it, copy it, start it there"),
        "--start": ("start", False, "a stopped VE is started there (else it stays stopped)")},
        required=("--to",)),
    "migration": Verb("this node's migration identity: key, trusted nodes, its sshd",
                      (("action", "one"), ("first", "optional"), ("second", "optional"))),
    "status": Verb("show one VE", VEID),
    "set": Verb("change a VE's settings, live if it runs", VEID, {
        "--hostname": ("hostname", True, "new host name"),
        "--ipadd": ("ipadd", REPEAT, "add an address (repeatable)"),
        "--ipdel": ("ipdel", REPEAT, "remove an address, or 'all' (repeatable)"),
        "--seccomp-allow": ("seccomp_allow", True,
                            "denied calls this VE may make (staff only), e.g. keyring,io_uring;"
                            " none: the full filter (from the next start)"),
        **NET_OPTIONS, **BOOT_OPTIONS, **LIMIT_OPTIONS}),
    "exec": Verb("run a command inside a running VE", VEID + (("command", "rest"),), {
        "--timeout": ("timeout", True, "kill the command after this many seconds")}),
    "enter": Verb("open a shell inside a running VE", VEID),
    "console": Verb("attach to a running VE's console (Ctrl-] leaves it)", VEID, {
        "--timeout": ("timeout", True, "piped input: leave once it was sent and the console "
                                       "was quiet this many seconds (default 3)")}),
    "list": Verb("list VEs (running ones unless -a)", (), {
        "-a": ("all", False, "stopped VEs too"), "--all": ("all", False, "stopped VEs too")}),
    "pid": Verb("tell which VE each host PID belongs to", (("pids", "many"),)),
    "watch": Verb("run the node watcher (reboots from inside, clean-up, sysinfo, LXCFS)", (), {
        "--onboot": ("onboot", False, "start the VEs marked onboot (once per boot)"),
        "--idle-exit": ("idle_exit", True, "exit after this many seconds with no VE running"),
        "--stop": ("stop", False, "stop the running watcher and its twin, even while VEs "
                                  "run (they lose their sysinfo answers and reboot detection)")}),
    "events": Verb("list VEs that ended on their own (reboot, poweroff, crash)", (), {
        "--forget": ("forget", False, "remove the events listed")}),
}
TEMPLATE_ACTIONS = ("build", "import", "list")
READ_ONLY = ("list", "status", "pid", "events")  # verbs that only print


def main(argv=None):
    """Run vectl with ``argv``; return the exit code."""
    # No logging set-up: warnings reach stderr through logging's last-resort
    # handler, and importing logging up front would slow every call.
    program = argv is None  # run as vectl, not called by code of its own process
    if program:
        gc.disable()  # until the engine is imported: see _freeze_imported
    try:
        args = parse(sys.argv[1:] if argv is None else argv, VERBS)
        if program and args.verb in READ_ONLY:
            # `vectl list | head` ends quietly, like other tools. Only verbs that
            # change nothing: a migration writing to a receiver that went away must
            # see the error and bring the VE back, not die of the signal.
            import signal
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    except HelpRequested as text:
        print(text)
        return 0
    except UsageError as exc:
        print(f"{exc}\n(see vectl --help)", file=sys.stderr)
        return 2
    as_json = args.json
    try:
        from .engine import Engine
        if program:
            _freeze_imported()
        engine = Engine(root=args.root)
        return COMMANDS[args.verb](engine, args, as_json)
    except VEError as exc:
        if as_json:
            print(json.dumps(exc.as_dict()))
        print(f"vectl: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130


def _freeze_imported():
    """Leave what the imports made out of garbage collection, then turn it back on.

    The imports make ~13,000 objects the collector tracks (modules, classes,
    functions), which live as long as the process. Collecting them over and
    over while they are imported (collection was off meanwhile) and again at
    exit cost a vectl call ~6 ms; what the verb itself makes is collected as
    usual."""
    gc.freeze()
    gc.enable()


def _limits(args):
    names = (dest for dest, _, _ in LIMIT_OPTIONS.values())
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _done(as_json, payload, text):
    print(json.dumps(payload) if as_json else text)
    return 0


def cmd_template(engine, args, as_json):
    if args.action == "list":
        metas = engine.template_list()
        lines = [f"{m.name:<16} {m.distribution:<12} {m.version}" for m in metas]
        return _done(as_json, [m.to_dict() for m in metas], "\n".join(lines) or "no templates")
    if args.action not in TEMPLATE_ACTIONS:
        raise InvalidConfig(f"unknown template action {args.action!r}: use build, import or list")
    if not args.name:
        raise InvalidConfig(f"vectl template {args.action}: a template name is needed")
    if args.action == "build":
        path = engine.template_build(args.name)
    else:
        if not args.tarball:
            raise InvalidConfig("vectl template import: give NAME and TARBALL")
        meta = {key: getattr(args, key) for key in ("distribution", "version", "stop_signal")
                if getattr(args, key)}
        if args.init:
            meta["init"] = (args.init,)
        meta["cgroup2"] = args.cgroup2
        path = engine.template_import(args.name, args.tarball, **meta)
    return _done(as_json, {"template": args.name, "path": str(path)},
                 f"template {args.name} is ready: {path}")


def cmd_create(engine, args, as_json):
    cfg = VEConfig(veid=args.veid, hostname=args.hostname, template=args.template,
                   limits=Limits().replace(**_limits(args)), privileged=args.privileged,
                   ips=tuple(args.ipadd), nameservers=tuple(args.nameserver),
                   netmode=args.netmode or "routed", bridge=args.bridge or "",
                   layout=args.layout or "image", onboot=args.onboot or "no",
                   bootorder=args.bootorder or 0, shared_template=args.shared_template)
    engine.create(cfg)
    return _done(as_json, {"veid": cfg.veid, "state": "stopped"}, f"VE {cfg.veid} created")


def cmd_start(engine, args, as_json):
    pid = engine.start(args.veid)
    return _done(as_json, {"veid": int(args.veid), "state": "running", "init_pid": pid},
                 f"VE {args.veid} is running (init PID {pid})")


def cmd_stop(engine, args, as_json):
    engine.stop(args.veid, timeout=_seconds(args.timeout, 30.0), fast=args.fast)
    return _done(as_json, {"veid": int(args.veid), "state": "stopped"},
                 f"VE {args.veid} is stopped")


def _seconds(text, default):
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 3600:
        raise InvalidConfig(f"bad timeout {text!r}: use seconds from 0 to 3600")
    return value


def cmd_restart(engine, args, as_json):
    pid = engine.restart(args.veid, timeout=_seconds(args.timeout, 30.0))
    return _done(as_json, {"veid": int(args.veid), "state": "running", "init_pid": pid},
                 f"VE {args.veid} restarted (init PID {pid})")


def cmd_destroy(engine, args, as_json):
    engine.destroy(args.veid)
    return _done(as_json, {"veid": int(args.veid), "state": "deleted"}, f"VE {args.veid} destroyed")


def cmd_reinstall(engine, args, as_json):
    cfg = engine.reinstall(args.veid, template=args.template, keep_old_as=args.keep_old,
                           timeout=_seconds(args.timeout, 30.0))
    kept = f"; the old root is in /{args.keep_old}" if args.keep_old else ""
    return _done(as_json, {"veid": cfg.veid, "template": cfg.template, "kept": args.keep_old},
                 f"VE {cfg.veid} reinstalled from {cfg.template}{kept}")


def cmd_set(engine, args, as_json):
    onboot = None if args.onboot is None else validate.yes_no(args.onboot, "onboot")
    bootorder = None if args.bootorder is None else \
        validate.integer(args.bootorder, "bootorder", 0, 1000)
    cfg = engine.set(args.veid, hostname=args.hostname, ipadd=args.ipadd, ipdel=args.ipdel,
                     nameservers=tuple(args.nameserver) or None, netmode=args.netmode,
                     bridge=args.bridge, onboot=onboot, bootorder=bootorder,
                     seccomp_allow=args.seccomp_allow, **_limits(args))
    payload = {"veid": cfg.veid, "hostname": cfg.hostname, **cfg.limits._asdict(),
               "ips": list(cfg.ips), "nameservers": list(cfg.nameservers),
               "netmode": cfg.netmode, "bridge": cfg.bridge, "onboot": cfg.onboot,
               "bootorder": cfg.bootorder, "seccomp_allow": list(cfg.seccomp_allow)}
    return _done(as_json, payload, f"VE {cfg.veid} saved")


def cmd_checkpoint(engine, args, as_json, stop=None):
    stop = args.stop if stop is None else stop
    done = engine.checkpoint(args.veid, stop=stop)
    return _done(as_json, {"veid": int(args.veid), "state": "stopped" if stop else "running",
                           **done},
                 f"VE {args.veid} {'hibernated' if stop else 'checkpointed'} in "
                 f"{done['seconds']:.2f} s (frozen {done['frozen_ms']} ms, "
                 f"{_human(done['bytes'])} of images)")


def cmd_hibernate(engine, args, as_json):
    return cmd_checkpoint(engine, args, as_json, stop=True)


def cmd_restore(engine, args, as_json):
    pid = engine.restore(args.veid)
    return _done(as_json, {"veid": int(args.veid), "state": "running", "init_pid": pid},
                 f"VE {args.veid} restored (init PID {pid})")


cmd_resume = cmd_restore


SNAPSHOT_ACTIONS = ("create", "list", "rollback", "delete")


def cmd_snapshot(engine, args, as_json):
    action, veid, name = args.action, args.veid, args.name
    if action not in SNAPSHOT_ACTIONS:
        raise InvalidConfig(f"vectl snapshot: the action is one of {', '.join(SNAPSHOT_ACTIONS)}")
    if action in ("rollback", "delete") and not name:
        raise InvalidConfig(f"vectl snapshot {action} VEID NAME: which snapshot?")
    if action == "create":
        done = engine.snapshot(veid, name)
        return _done(as_json, {"veid": int(veid), **done},
                     f"VE {veid}: snapshot {done['name']} taken in {done['seconds']:.2f} s "
                     f"({done['method']}, frozen {done['frozen_ms']} ms)")
    if action == "list":
        found = engine.snapshots(veid)
        lines = [f"{s['name']:<24} {_when(s['created'])}  {s['method']:<7} "
                 f"{_human(s['exclusive_bytes']):>7} of its own" for s in found]
        return _done(as_json, found, "\n".join(lines) or f"VE {veid} has no snapshots")
    if action == "rollback":
        done = engine.rollback(veid, name)
        return _done(as_json, {"veid": int(veid), **done},
                     f"VE {veid} rolled back to {name} in {done['seconds']:.2f} s"
                     + (" (restarted)" if done["restarted"] else ""))
    engine.snapshot_delete(veid, name)
    return _done(as_json, {"veid": int(veid), "deleted": name},
                 f"VE {veid}: snapshot {name} deleted")


BACKUP_ACTIONS = {
    "create": "create VEID: back it up now",
    "list": "list [VEID]: its backups (every VE's without)",
    "ls": "ls ID [PATH]: a directory of backup ID",
    "cat": "cat ID PATH: a file of backup ID, to standard output",
    "restore": "restore VEID ID: its whole disk back as backup ID has it",
    "restore-files": "restore-files VEID ID PATH [--into DIR]: PATH back into the running VE",
    "forget": "forget VEID --keep-daily N --keep-weekly M: drop the older ones",
    "check": "check [--read-data]: verify the repository",
}


def cmd_backup(engine, args, as_json):
    action, first, second, third = args.action, args.first, args.second, args.third
    needs = {"create": 1, "ls": 1, "cat": 2, "restore": 2, "restore-files": 3, "forget": 1}
    if action not in BACKUP_ACTIONS or sum(x is not None for x in (first, second, third)) \
            < needs.get(action, 0):
        raise InvalidConfig("vectl backup: " + "; ".join(BACKUP_ACTIONS.values()))
    if action == "create":
        done = engine.backup(first)
        return _done(as_json, {"veid": int(first), **done},
                     f"VE {first} backed up as {done['id']} in {done['seconds']:.1f} s "
                     f"({_human(done['data_added'])} new)")
    if action == "list":
        found = engine.backups(first)
        lines = [f"{b['id']}  {b['time'][:19]}  VE {b['veid']}" for b in found]
        return _done(as_json, found, "\n".join(lines) or "no backups")
    if action == "ls":
        entries = engine.backup_listing(first, second or "/")
        lines = [f"{e['type']:<8} {e['size']:>12}  {e['name']}" for e in entries]
        return _done(as_json, entries, "\n".join(lines))
    if action == "cat":
        engine.backup_dump(first, second, sys.stdout.buffer)
        return 0
    if action == "restore":
        done = engine.restore_backup(first, second)
        return _done(as_json, {"veid": int(first), **done},
                     f"VE {first} restored from {done['id']} in {done['seconds']:.1f} s")
    if action == "restore-files":
        count = engine.restore_files(first, second, third, into=args.into or "/")
        return _done(as_json, {"veid": int(first), "restored": count},
                     f"{count} entries restored into VE {first}")
    if action == "forget":
        engine.backup_forget(first, validate.integer(args.keep_daily or 7, "keep-daily", 0,
                                                     10000),
                             validate.integer(args.keep_weekly or 4, "keep-weekly", 0, 10000))
        return _done(as_json, {"veid": int(first)}, f"older backups of VE {first} forgotten")
    engine.backup_check(read_data=args.read_data)
    return _done(as_json, {"ok": True}, "the backup repository is sound")


def _when(seconds):
    import time
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def cmd_migrate(engine, args, as_json):
    done = engine.migrate(args.veid, args.to, live=not args.offline, start_there=args.start)
    how = done["mode"] + (f" ({done['why_offline']})" if done["why_offline"] else "")
    downtime = "" if done["downtime_s"] is None else f", down {done['downtime_s']:.2f} s"
    return _done(as_json, {"veid": int(args.veid), "to": args.to, **done},
                 f"VE {args.veid} moved to {args.to}: {how} in {done['total_s']:.1f} s"
                 f"{downtime}")


MIGRATION_ACTIONS = {
    "key": "print this node's public key and its migration sshd's host key",
    "allow": "allow KEY: let the node holding KEY push VEs here",
    "know": "know HOST:PORT HOSTKEY: record the migration sshd of another node",
    "serve": "serve HOST:PORT: run this node's migration sshd (foreground)",
    "settle": "settle VEID: finish or roll back a move of VEID that was cut off",
    "receive": "what that sshd runs for a trusted node (SSH_ORIGINAL_COMMAND)",
}


def cmd_migration(engine, args, as_json):
    from .migrate import identity
    layout = engine.layout
    layout.ensure()
    if args.action == "key":
        key, host_key = identity.ensure_keys(layout)
        return _done(as_json, {"key": key, "host_key": host_key},
                     f"key {key}\nhost key {host_key}")
    if args.action == "allow" and args.first:
        identity.allow(layout, args.first,
                       identity.receiver_command(layout, engine.cgroups.parent))
        return _done(as_json, {"allowed": args.first}, "allowed")
    if args.action == "know" and args.first and args.second:
        identity.know_host(layout, args.first, args.second)
        return _done(as_json, {"known": args.first}, f"{args.first} recorded")
    if args.action == "settle" and args.first:
        outcome = engine.settle_migration(args.first)
        text = {"there": f"VE {args.first} runs on the node it was moving to",
                "here": f"VE {args.first} is back on this node",
                None: f"no move of VE {args.first} was under way"}[outcome]
        return _done(as_json, {"veid": int(args.first), "settled": outcome}, text)
    if args.action == "receive":
        from .migrate import receive
        answer = receive.handle(engine, os.environ.get("SSH_ORIGINAL_COMMAND", ""),
                                sys.stdin.buffer)
        if answer.get("exec"):
            os.chdir(answer["cwd"])
            os.execv(answer["exec"][0], answer["exec"])
        if answer.get("session"):
            # Unbuffered: state files go from the pipe to their files by splice(2).
            return receive.session(engine, answer["session"], sys.stdin.buffer.raw,
                                   sys.stdout.buffer)
        print(json.dumps(answer), flush=True)
        return 0 if answer["ok"] else 1
    if args.action == "serve" and args.first:
        identity.ensure_keys(layout)
        argv = identity.sshd_argv(layout, args.first)
        os.execv(argv[0], argv)
    raise InvalidConfig("vectl migration: " + "; ".join(
        f"{name}: {text}" for name, text in MIGRATION_ACTIONS.items()))


def cmd_status(engine, args, as_json):
    status = engine.status(args.veid)
    traffic = engine.traffic(args.veid)
    try:
        disk = engine.disk_usage(args.veid)._asdict()
        shown = (f"disk {_human(disk['space_used'])}/{_human(disk['space_total'])}  "
                 f"inodes {disk['inodes_used']}/{disk['inodes_total']}")
    except VEError as exc:  # e.g. an image whose figures are lost: the rest still shows
        disk, shown = None, f"disk unknown ({exc})"
    text = (_list_table([status]) + "\n"
            + "  ".join(f"{k} {'unknown' if v is None else v}" for k, v in traffic.items())
            + "\n" + shown)
    return _done(as_json, {**status.as_dict(), "traffic": traffic, "disk": disk}, text)


def cmd_list(engine, args, as_json):
    statuses = engine.list(running_only=not args.all)
    return _done(as_json, [s.as_dict() for s in statuses], _list_table(statuses))


def _list_table(statuses):
    lines = [f"{'VEID':>6} {'NPROC':>5} {'STATUS':<8} {'RAM used/limit':>17}  "
             f"{'IP_ADDR':<16} HOSTNAME"]
    for s in statuses:
        nproc = "-" if s.nproc is None else s.nproc
        used = "-" if s.ram_used is None else _human(s.ram_used)
        ram = f"{used}/{_human(s.ram_limit)}"
        ip = s.ips[0] if s.ips else "-"
        lines.append(f"{s.veid:>6} {nproc:>5} {s.state:<8} {ram:>17}  {ip:<16} {s.hostname}")
    return "\n".join(lines)


def _human(nbytes):
    for suffix, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if nbytes >= factor:
            return f"{nbytes / factor:.1f}{suffix}".replace(".0", "")
    return str(nbytes)


def cmd_pid(engine, args, as_json):
    owners = engine.pid(args.pids)
    missing = [o.pid for o in owners if o.veid is None]
    lines = [f"{'Pid':<8}{'VEID':<8}Name"]
    lines += [f"{o.pid:<8}{o.veid:<8}{o.name}" for o in owners if o.veid is not None]
    _done(as_json, [o.as_dict() for o in owners], "\n".join(lines))
    for pid in missing:
        print(f"vectl: no process with PID {pid}", file=sys.stderr)
    return 3 if missing else 0


def cmd_exec(engine, args, as_json):
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    timeout = None if args.timeout is None else _seconds(args.timeout, None)
    if as_json:
        result = engine.exec(args.veid, command, timeout=timeout)
        print(json.dumps({"returncode": result.returncode,
                          "stdout": result.stdout.decode(errors="replace"),
                          "stderr": result.stderr.decode(errors="replace")}))
        return result.returncode
    stdin = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
    result = engine.exec(args.veid, command, input=stdin, stdout=sys.stdout.buffer,
                         stderr=sys.stderr.buffer, timeout=timeout)
    return result.returncode


def cmd_enter(engine, args, as_json):
    if not os.isatty(0):
        print("vectl enter: stdin is not a terminal; use vectl exec", file=sys.stderr)
        return 2
    print(f"entered into VE {validate.veid(args.veid)}", file=sys.stderr)
    code = engine.enter(args.veid, term=os.environ.get("TERM", "xterm"))
    print(f"exited from VE {args.veid}", file=sys.stderr)
    return code


def cmd_console(engine, args, as_json):
    from .watch.console_client import attach
    interactive = os.isatty(0)
    size = os.get_terminal_size(0) if interactive else os.terminal_size((24, 80))
    with engine.console(args.veid, rows=size.lines, cols=size.columns) as conn:
        if interactive:
            print(f"console of VE {args.veid}; Ctrl-] leaves it", file=sys.stderr)
        why = attach(conn, quiet=_seconds(args.timeout, 3.0))
    if interactive:
        print(f"\r\nleft the console of VE {args.veid} ({why})", file=sys.stderr)
    return 0


def cmd_watch(engine, args, as_json):
    import logging
    import signal
    if args.stop:
        return _stop_watcher(engine, as_json)
    from .watch.daemon import Watcher
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    idle = None if args.idle_exit is None else _seconds(args.idle_exit, None)
    watcher = Watcher(engine, idle_exit=idle, onboot=args.onboot)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: watcher.stop())
    watcher.serve()
    return 0


def _stop_watcher(engine, as_json):
    import time
    from . import watch
    try:
        pid = watch.request(engine.layout, {"op": "stop"})["pid"]
    except (OSError, ValueError, KeyError):
        return _done(as_json, {"stopped": None}, "no watcher runs")
    deadline = time.monotonic() + 60
    while watch.running(engine.layout) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _done(as_json, {"stopped": pid}, f"the watcher (PID {pid}) stopped")


def cmd_events(engine, args, as_json):
    events = engine.events()
    lines = [f"{'TIME':<20} {'VEID':>6} {'REASON':<12} RESTARTED"]
    lines += [f"{_when(e['time']):<20} {e['veid']:>6} {e['reason']:<12} "
              f"{'yes' if e['restarted'] else 'no'} {e['error']}".rstrip() for e in events]
    _done(as_json, events, "\n".join(lines) if events else "no events")
    if args.forget:
        for event in events:
            engine.forget_event(event["id"])
    return 0


def _when(epoch):
    import time
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


COMMANDS = {name[4:]: func for name, func in globals().items() if name.startswith("cmd_")}

if __name__ == "__main__":
    sys.exit(main())
