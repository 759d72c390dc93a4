"""Bad input gets a clear error and a stable exit code, and leaves nothing behind."""

import io
import json
import tarfile

import pytest

from ve import Limits, VEConfig
from ve.errors import InvalidConfig, NotFound, ResourceError

from .conftest import vectl

CREATE = ["create", "--template", "busybox", "--hostname", "web1"]


def snapshot(engine):
    """Every file under VE_ROOT except the template cache, and the VE cgroups."""
    engine.layout.ensure()  # the empty top-level directories are not VE leftovers
    files = sorted(str(p.relative_to(engine.layout.root))
                   for p in engine.layout.root.rglob("*")
                   if engine.layout.cache_dir not in p.parents and p != engine.layout.cache_dir)
    return files, engine.cgroups.exists("101")


@pytest.mark.parametrize("args, code, message", [
    (["create", "99", "--template", "busybox", "--hostname", "a"], 2, "bad VEID '99'"),
    (["create", "abc", "--template", "busybox", "--hostname", "a"], 2, "bad VEID 'abc'"),
    (["create", "101", "--template", "nope", "--hostname", "a"], 3,
     "template nope is not installed"),
    (["create", "101", "--template", "../etc", "--hostname", "a"], 2, "bad template name"),
    (["create", "101", "--template", "busybox", "--hostname", "a\nb"], 2, "bad hostname"),
    (["create", "101", "--template", "busybox", "--hostname=-x"], 2, "bad hostname"),
    (["create", "101", *CREATE[1:], "--ram", "12Q"], 2, "bad ram '12Q'"),
    (["create", "101", *CREATE[1:], "--ram", "1M"], 2, "the minimum is 16M"),
    (["create", "101", *CREATE[1:], "--cpulimit=-5"], 2, "bad cpulimit"),
    (["create", "101", *CREATE[1:], "--numproc", "lots"], 2, "bad numproc"),
    (["start", "101"], 3, "no such VE"),
    (["set", "101", "--ram", "1G"], 3, "no such VE"),
])
def test_cli_rejects_bad_input_cleanly(engine, args, code, message):
    before = snapshot(engine)
    result = vectl(engine, *args, check=False)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert snapshot(engine) == before


def test_json_errors_are_machine_readable(engine):
    result = vectl(engine, "start", "4242", "--json", check=False)
    assert result.returncode == 3
    assert json.loads(result.stdout) == {"error": "not-found", "message": "no such VE",
                                         "veid": 4242}


def test_bad_limits_on_set_change_nothing(engine):
    engine.create(VEConfig(101, "web1", "busybox", Limits(ram="128M")))
    engine.start(101)
    for bad in ({"ram": "lots"}, {"cpus": "-1"}, {"numproc": "3"}):
        with pytest.raises(InvalidConfig):
            engine.set(101, **bad)
    assert engine.config(101).limits.ram == 128 << 20
    assert engine.cgroups.usage("101").memory_limit == 128 << 20


def _tarball(path, *members):
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_hostile_template_is_refused_and_leaves_nothing(engine, tmp_path):
    """A template whose /proc is a symlink to the host's is refused at import."""
    evil = tarfile.TarInfo("proc")
    evil.type, evil.linkname = tarfile.SYMTYPE, "/proc"
    tarball = _tarball(tmp_path / "evil.tar.gz", (evil, None))
    result = vectl(engine, "template", "import", "evil", tarball, check=False)
    assert result.returncode == 2 and "proc" in result.stderr
    assert not list(engine.layout.cache_dir.glob("evil*"))
    with pytest.raises(NotFound):
        engine.create(VEConfig(101, "web1", "evil"))


def test_failed_start_rolls_back(engine, tmp_path):
    """A VE whose template has no init fails to start and leaves no cgroup or run file."""
    info = tarfile.TarInfo("etc/hostname")
    info.size = 2
    _tarball(tmp_path / "noinit.tar.gz", (info, b"x\n"))
    engine.template_import("noinit", tmp_path / "noinit.tar.gz")
    engine.create(VEConfig(101, "web1", "noinit"))
    with pytest.raises(ResourceError, match="sbin/init"):
        engine.start(101)
    assert not engine.cgroups.exists("101")
    assert not engine.layout.state(101).exists()
    assert engine.status(101).state == "stopped"
    assert vectl(engine, "start", "101", check=False).returncode == 6


def test_a_stale_run_file_from_another_boot_is_ignored(engine):
    """After a host reboot the run file's PID means nothing: the VE is stopped."""
    engine.create(VEConfig(101, "web1", "busybox"))
    engine.layout.state(101).write_text(json.dumps(
        {"pid": 1, "start_time": 0, "boot_id": "00000000-0000-0000-0000-000000000000"}))
    assert engine.status(101).state == "stopped"
    pid = engine.start(101)
    assert pid != 1 and engine.status(101).init_pid == pid
