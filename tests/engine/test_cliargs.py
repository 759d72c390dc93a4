"""vectl's command-line grammar (ve/cliargs.py) on its own."""

import pytest

from ve.cli import VERBS
from ve.cliargs import HelpRequested, UsageError, parse


def test_options_before_and_after_the_verb():
    args = parse(["--json", "create", "101", "--template=busybox", "--hostname", "web1",
                  "--ram", "256M", "--root", "/tmp/x", "--privileged"], VERBS)
    assert (args.verb, args.veid, args.template, args.hostname, args.ram) == \
        ("create", "101", "busybox", "web1", "256M")
    assert args.json and args.privileged and args.root == "/tmp/x" and args.swap is None


def test_exec_takes_every_word_after_the_veid_as_the_command():
    assert parse(["exec", "101", "ps", "-ef", "--json"], VERBS).command == ["ps", "-ef", "--json"]
    assert parse(["exec", "101", "--", "ls", "-l"], VERBS).command == ["ls", "-l"]
    assert parse(["--json", "exec", "101", "true"], VERBS).json


def test_many_and_optional_positionals():
    assert parse(["pid", "1", "2", "3"], VERBS).pids == ["1", "2", "3"]
    args = parse(["template", "build", "busybox"], VERBS)
    assert (args.action, args.name, args.tarball) == ("build", "busybox", None)
    assert parse(["list", "-a"], VERBS).all and not parse(["list"], VERBS).all


@pytest.mark.parametrize("argv, message", [
    ([], "a verb is needed"),
    (["bogus"], "unknown verb 'bogus'"),
    (["start"], "expected VEID"),
    (["start", "101", "102"], "unexpected argument '102'"),
    (["stop", "101", "--nope"], "unknown option --nope"),
    (["stop", "101", "--fast=yes"], "--fast takes no value"),
    (["set", "101", "--ram"], "--ram needs a value"),
    (["create", "101", "--template", "busybox"], "--hostname is required"),
    (["pid"], "expected at least one PIDS"),
])
def test_bad_command_lines_say_why(argv, message):
    with pytest.raises(UsageError, match=message):
        parse(argv, VERBS)


def test_help_lists_verbs_and_options():
    with pytest.raises(HelpRequested, match="enter +open a shell"):
        parse(["--help"], VERBS)
    with pytest.raises(HelpRequested, match="--cpulimit CPULIMIT"):
        parse(["set", "-h"], VERBS)
