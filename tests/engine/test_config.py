"""The VE spec: input checks and the conf file round trip (no root needed)."""

import pytest

from ve import validate
from ve.config import Limits, VEConfig, dumps, loads
from ve.errors import InvalidConfig


@pytest.mark.parametrize("text, expected", [
    ("256M", 256 << 20), ("1G", 1 << 30), ("4096", 4096), ("1kb", 1024),
    ("2T", 2 << 40), ("unlimited", None), (5, 5),
])
def test_sizes_parse(text, expected):
    assert validate.size(text) == expected


@pytest.mark.parametrize("text", ["12Q", "M", "", "-1", "1.5G", "B", "１２", True])
def test_bad_sizes_are_refused(text):
    with pytest.raises(InvalidConfig):
        validate.size(text)


@pytest.mark.parametrize("name", ["web1", "a.b-c.example", "x" * 63, "WEB1"])
def test_good_hostnames(name):
    assert validate.hostname(name) == name


@pytest.mark.parametrize("name", ["-x", "x-", "a..b", "a_b", "x" * 64, "a\nb", "", "web1.",
                                  "a b", "é"])
def test_bad_hostnames(name):
    with pytest.raises(InvalidConfig):
        validate.hostname(name)


@pytest.mark.parametrize("name", ["../etc", ".x", "a/b", "", "a..b", "x" * 65, "a b"])
def test_bad_template_names(name):
    with pytest.raises(InvalidConfig):
        validate.template_name(name)


@pytest.mark.parametrize("path, expected", [
    ("/", "/"), ("/etc/nginx", "/etc/nginx"), ("//etc//nginx/", "/etc/nginx"),
    ("/./etc/./x", "/etc/x"), ("/a..b/...", "/a..b/..."), ("/" + "x" * 4095, "/" + "x" * 4095),
])
def test_paths_inside_a_ve_are_normalised(path, expected):
    assert validate.inside_path(path) == expected


@pytest.mark.parametrize("path, says", [
    ("etc/nginx", "absolute"), ("", "absolute"), (None, "absolute"), ("./etc", "absolute"),
    ("/etc\0x", "absolute"), ("/" + "x" * 4096, "absolute"),
    ("/..", "'..'"), ("/../etc", "'..'"), ("/srv/../../etc", "'..'"), ("/a/b/..", "'..'"),
])
def test_bad_paths_inside_a_ve_are_refused(path, says):
    with pytest.raises(InvalidConfig, match=says) as refused:
        validate.inside_path(path, where="the VPS")
    assert "'..'" in says or "inside the VPS" in refused.value.message


def test_conf_file_round_trip():
    cfg = VEConfig(101, "web1", "busybox", Limits(ram="512M", swap="1G", cpulimit=50))
    assert loads(dumps(cfg)) == cfg
    assert 'RAM="512M"' in dumps(cfg)


@pytest.mark.parametrize("line", ['HOSTNAME=x', 'HOSTNAME="a$(reboot)"', 'hostname="x"',
                                  'X="a"b"', '="x"', 'X="', 'HOSTNAME="a`id`"'])
def test_conf_file_lines_that_a_shell_would_expand_are_refused(line):
    text = dumps(VEConfig(101, "web1", "busybox")) + line + "\n"
    with pytest.raises(InvalidConfig, match="expected KEY"):
        loads(text)


def test_limits_replace_is_checked():
    limits = Limits()
    assert limits.replace(ram="1G", swap=None).ram == 1 << 30
    with pytest.raises(InvalidConfig):
        limits.replace(numproc="3")
