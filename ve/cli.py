"""vectl: the operator's command line. The only module that prints or exits.

Exit codes: 0 ok, 1 unexpected error, 2 bad input, 3 not found, 4 exists,
5 wrong state or busy, 6 host resource failure, 7 unsupported; ``exec`` and
``enter`` exit with the command's own code.
"""

import argparse
import json
import os
import sys

from . import validate
from .config import Limits, VEConfig
from .errors import VEError

LIMIT_OPTIONS = ("ram", "swap", "cpuunits", "cpulimit", "cpus", "numproc")


VERBS = ("template", "create", "start", "stop", "restart", "destroy", "status", "set",
         "exec", "enter", "list", "pid")


def build_parser(only=None):
    """Return the argparse parser of vectl's subcommands (just ``only`` if given).

    Building one subparser instead of twelve saves a few milliseconds of
    every vectl call; help and errors still name all verbs.
    """
    common = argparse.ArgumentParser(add_help=False, formatter_class=_formatter)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print machine-readable JSON")
    common.add_argument("--root", default=argparse.SUPPRESS,
                        help="VE_ROOT to use (default: $VE_ROOT or /var/lib/ve)")
    parser = argparse.ArgumentParser(prog="vectl", parents=[common], formatter_class=_formatter,
                                     description="Manage OpenVZ-style containers (VEs).")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name, helptext, with_veid=True):
        if only and name != only:
            # A throwaway, not registered.
            return argparse.ArgumentParser(add_help=False, formatter_class=_formatter)
        sub = verbs.add_parser(name, parents=[common], help=helptext, description=helptext,
                               formatter_class=_formatter)
        if with_veid:
            sub.add_argument("veid")
        return sub

    template = verb("template", "build, import or list OS templates", with_veid=False)
    template.add_argument("action", choices=("build", "import", "list"))
    template.add_argument("name", nargs="?")
    template.add_argument("tarball", nargs="?", help="rootfs tarball (import)")

    create = verb("create", "create a VE from an OS template")
    create.add_argument("--template", required=True)
    create.add_argument("--hostname", required=True)
    create.add_argument("--privileged", action="store_true",
                        help="no user namespace: VE root is host root (staff only)")
    _limit_options(create)

    verb("start", "start a VE")
    stop = verb("stop", "shut a VE down cleanly (kill after --timeout)")
    stop.add_argument("--timeout", type=float, default=30.0)
    stop.add_argument("--fast", action="store_true", help="kill at once")
    verb("restart", "stop and start a VE")
    verb("destroy", "stop a VE and remove all its files")
    verb("status", "show one VE")

    setter = verb("set", "change a VE's settings, live if it runs")
    setter.add_argument("--hostname")
    _limit_options(setter)

    execute = verb("exec", "run a command inside a running VE")
    execute.add_argument("command", nargs=argparse.REMAINDER)
    verb("enter", "open a shell inside a running VE")

    lister = verb("list", "list VEs (running ones unless -a)", with_veid=False)
    lister.add_argument("-a", "--all", action="store_true")
    pids = verb("pid", "tell which VE each host PID belongs to", with_veid=False)
    pids.add_argument("pids", nargs="+")
    return parser


def _formatter(prog):
    """Help formatter with a fixed width: argparse would import shutil (~2 ms
    of every call) only to ask the terminal's width."""
    columns = os.environ.get("COLUMNS", "")
    width = int(columns) if columns.isdigit() and int(columns) > 40 else 80
    return argparse.HelpFormatter(prog, width=width - 2)


def _limit_options(sub):
    sub.add_argument("--ram", help="RAM limit, e.g. 256M")
    sub.add_argument("--swap", help="swap limit, e.g. 0 or 512M")
    sub.add_argument("--cpuunits", help="CPU weight, 1000 = normal")
    sub.add_argument("--cpulimit", help="%% of one CPU, 0 = no limit")
    sub.add_argument("--cpus", help="number of CPUs, 0 = all")
    sub.add_argument("--numproc", help="maximum processes and threads")


def main(argv=None):
    """Run vectl with ``argv``; return the exit code."""
    # No logging set-up: warnings reach stderr through logging's last-resort
    # handler, and importing logging up front would slow every call.
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(chosen if chosen in VERBS else None).parse_args(argv)
    as_json = getattr(args, "json", False)
    try:
        from .engine import Engine
        engine = Engine(root=getattr(args, "root", None))
        return COMMANDS[args.verb](engine, args, as_json)
    except VEError as exc:
        if as_json:
            print(json.dumps(exc.as_dict()))
        print(f"vectl: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130


def _limits(args):
    return {k: getattr(args, k) for k in LIMIT_OPTIONS if getattr(args, k) is not None}


def _done(as_json, payload, text):
    print(json.dumps(payload) if as_json else text)
    return 0


def cmd_template(engine, args, as_json):
    if args.action == "list":
        metas = engine.template_list()
        lines = [f"{m.name:<16} {m.distribution:<12} {m.version}" for m in metas]
        return _done(as_json, [m.to_dict() for m in metas], "\n".join(lines) or "no templates")
    if not args.name:
        raise SystemExit(f"vectl template {args.action}: a template name is needed")
    if args.action == "build":
        path = engine.template_build(args.name)
    else:
        if not args.tarball:
            raise SystemExit("vectl template import: give NAME and TARBALL")
        path = engine.template_import(args.name, args.tarball)
    return _done(as_json, {"template": args.name, "path": str(path)},
                 f"template {args.name} is ready: {path}")


def cmd_create(engine, args, as_json):
    cfg = VEConfig(veid=args.veid, hostname=args.hostname, template=args.template,
                   limits=Limits().replace(**_limits(args)), privileged=args.privileged)
    engine.create(cfg)
    return _done(as_json, {"veid": cfg.veid, "state": "stopped"}, f"VE {cfg.veid} created")


def cmd_start(engine, args, as_json):
    pid = engine.start(args.veid)
    return _done(as_json, {"veid": int(args.veid), "state": "running", "init_pid": pid},
                 f"VE {args.veid} is running (init PID {pid})")


def cmd_stop(engine, args, as_json):
    engine.stop(args.veid, timeout=args.timeout, fast=args.fast)
    return _done(as_json, {"veid": int(args.veid), "state": "stopped"}, f"VE {args.veid} is stopped")


def cmd_restart(engine, args, as_json):
    pid = engine.restart(args.veid)
    return _done(as_json, {"veid": int(args.veid), "state": "running", "init_pid": pid},
                 f"VE {args.veid} restarted (init PID {pid})")


def cmd_destroy(engine, args, as_json):
    engine.destroy(args.veid)
    return _done(as_json, {"veid": int(args.veid), "state": "deleted"}, f"VE {args.veid} destroyed")


def cmd_set(engine, args, as_json):
    cfg = engine.set(args.veid, hostname=args.hostname, **_limits(args))
    payload = {"veid": cfg.veid, "hostname": cfg.hostname, **cfg.limits._asdict()}
    return _done(as_json, payload, f"VE {cfg.veid} saved")


def cmd_status(engine, args, as_json):
    status = engine.status(args.veid)
    return _done(as_json, status.as_dict(), _list_table([status]))


def cmd_list(engine, args, as_json):
    statuses = engine.list(running_only=not args.all)
    return _done(as_json, [s.as_dict() for s in statuses], _list_table(statuses))


def _list_table(statuses):
    lines = [f"{'VEID':>6} {'NPROC':>5} {'STATUS':<8} {'RAM used/limit':>17}  HOSTNAME"]
    for s in statuses:
        nproc = "-" if s.nproc is None else s.nproc
        used = "-" if s.ram_used is None else _human(s.ram_used)
        ram = f"{used}/{_human(s.ram_limit)}"
        lines.append(f"{s.veid:>6} {nproc:>5} {s.state:<8} {ram:>17}  {s.hostname}")
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
    if as_json:
        result = engine.exec(args.veid, command)
        print(json.dumps({"returncode": result.returncode,
                          "stdout": result.stdout.decode(errors="replace"),
                          "stderr": result.stderr.decode(errors="replace")}))
        return result.returncode
    stdin = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
    result = engine.exec(args.veid, command, input=stdin,
                         stdout=sys.stdout.buffer, stderr=sys.stderr.buffer)
    return result.returncode


def cmd_enter(engine, args, as_json):
    if not os.isatty(0):
        print("vectl enter: stdin is not a terminal; use vectl exec", file=sys.stderr)
        return 2
    print(f"entered into VE {validate.veid(args.veid)}", file=sys.stderr)
    code = engine.enter(args.veid, term=os.environ.get("TERM", "xterm"))
    print(f"exited from VE {args.veid}", file=sys.stderr)
    return code


COMMANDS = {name[4:]: func for name, func in globals().items() if name.startswith("cmd_")}

if __name__ == "__main__":
    sys.exit(main())
