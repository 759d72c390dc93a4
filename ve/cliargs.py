"""The small command-line grammar of vectl.

argparse would cost ~10 ms of every vectl call (it imports re and gettext
and builds a parser per verb), a fifth of a ``vectl start``. vectl's grammar
is small and fixed: ``vectl [GLOBAL] VERB [POSITIONALS] [OPTIONS]``, where
options are ``--name value``, ``--name=value`` or flags, and ``exec`` takes
everything after the VEID as the command.
"""

from collections import namedtuple
from types import SimpleNamespace

REPEAT = "repeat"
GLOBAL_OPTIONS = {"--json": ("json", False, "print machine-readable JSON"),
                  "--root": ("root", True, "VE_ROOT to use (default: $VE_ROOT or /var/lib/ve)")}


class Verb(namedtuple("Verb", "help positionals options required", defaults=((), {}, ()))):
    """One subcommand: ``positionals`` are (name, kind) with kind one of
    "one", "optional", "many" (at least one) or "rest" (every remaining word);
    ``options`` map a flag to (dest, takes a value, help), where "takes a
    value" may be REPEAT: the option may be given many times (a list)."""

    __slots__ = ()


class UsageError(Exception):
    """The command line does not fit the grammar; the message says why."""


class HelpRequested(Exception):
    """-h or --help: the message is the help text."""


def parse(argv, verbs):
    """Parse ``argv`` (without the program name) into a namespace with ``verb``."""
    words = list(argv)
    args = SimpleNamespace(json=False, root=None, verb=None)
    while words and words[0].startswith("-"):
        if words[0] in ("-h", "--help"):
            raise HelpRequested(overview(verbs))
        _take_option(words, GLOBAL_OPTIONS, args, "vectl")
    if not words:
        raise UsageError(f"vectl: a verb is needed ({', '.join(verbs)})")
    args.verb = words.pop(0)
    if args.verb not in verbs:
        raise UsageError(f"vectl: unknown verb {args.verb!r} (choose from {', '.join(verbs)})")
    _parse_verb(words, verbs[args.verb], args)
    return args


def _parse_verb(words, verb, args):
    prog = f"vectl {args.verb}"
    options = {**GLOBAL_OPTIONS, **verb.options}
    for dest, takes_value, _ in verb.options.values():
        setattr(args, dest, [] if takes_value == REPEAT else None if takes_value else False)
    positionals = []
    rest = any(kind == "rest" for _, kind in verb.positionals)
    while words:
        if rest and len(positionals) == len(verb.positionals) - 1:
            positionals.append(words[1:] if words[0] == "--" else words[:])
            break
        if words[0] in ("-h", "--help"):
            raise HelpRequested(usage(args.verb, verb))
        if words[0].startswith("-") and len(words[0]) > 1:
            _take_option(words, options, args, prog)
        else:
            positionals.append(words.pop(0))
    _assign_positionals(positionals, verb, args, prog)
    for flag in verb.required:
        if getattr(args, options[flag][0]) is None:
            raise UsageError(f"{prog}: {flag} is required")


def _take_option(words, options, args, prog):
    word = words.pop(0)
    flag, has_inline, inline = word.partition("=")
    if flag not in options:
        raise UsageError(f"{prog}: unknown option {flag}")
    dest, takes_value, _ = options[flag]
    if not takes_value:
        if has_inline:
            raise UsageError(f"{prog}: {flag} takes no value")
        setattr(args, dest, True)
        return
    if has_inline:
        value = inline
    elif words:
        value = words.pop(0)
    else:
        raise UsageError(f"{prog}: {flag} needs a value")
    if takes_value == REPEAT:
        getattr(args, dest).append(value)
    else:
        setattr(args, dest, value)


def _assign_positionals(values, verb, args, prog):
    spec = list(verb.positionals)
    for index, (name, kind) in enumerate(spec):
        if kind == "many":
            if not values[index:]:
                raise UsageError(f"{prog}: expected at least one {name.upper()}")
            setattr(args, name, values[index:])
            return
        if kind == "rest":
            setattr(args, name, values[index] if index < len(values) else [])
            return
        if index < len(values):
            setattr(args, name, values[index])
        elif kind == "one":
            raise UsageError(f"{prog}: expected {name.upper()}")
        else:
            setattr(args, name, None)
    if len(values) > len(spec):
        raise UsageError(f"{prog}: unexpected argument {values[len(spec)]!r}")


def usage(name, verb):
    """Return the help text of one verb."""
    words = [f"[{p.upper()}]" if k == "optional" else f"{p.upper()}..." if k in ("many", "rest")
             else p.upper() for p, k in verb.positionals]
    lines = [f"usage: vectl {name} {' '.join(words)} [OPTIONS]".replace("  ", " "), "",
             verb.help, "", "options:"]
    for flag, (dest, takes_value, text) in {**verb.options, **GLOBAL_OPTIONS}.items():
        left = f"{flag} {dest.upper()}" if takes_value else flag
        lines.append(f"  {left:<22} {text}")
    return "\n".join(lines)


def overview(verbs):
    """Return the help text listing every verb."""
    lines = ["usage: vectl [--json] [--root DIR] VERB ...", "",
             "Manage OpenVZ-style containers (VEs).", "", "verbs:"]
    lines += [f"  {name:<10} {verb.help}" for name, verb in verbs.items()]
    lines += ["", "`vectl VERB --help` shows a verb's options."]
    return "\n".join(lines)
