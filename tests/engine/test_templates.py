"""OS template caches: building busybox, safe unpacking, importing, lookup."""

import hashlib
import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from ve.errors import AlreadyExists, InvalidConfig, NotFound
from ve.storage import (build_busybox, cache_path, import_tarball, list_templates,
                        metadata, unpack)

SHIFT = 6553600  # VEID 100's uid range

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpack tests chown: run as root")


# -- building tarballs, hostile ones included -----------------------------------------

def member(name, kind=tarfile.REGTYPE, data=b"", mode=0o644, uid=0, gid=0, link="",
           dev=(0, 0), mtime=1_600_000_000):
    """Return a (TarInfo, data) pair; any field may be hostile."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = kind, mode, uid, gid
    info.linkname, info.mtime = link, mtime
    info.devmajor, info.devminor = dev
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def directory(name, mode=0o755, **kw):
    return member(name, tarfile.DIRTYPE, mode=mode, **kw)


def symlink(name, target, **kw):
    return member(name, tarfile.SYMTYPE, mode=0o777, link=target, **kw)


def hardlink(name, target):
    return member(name, tarfile.LNKTYPE, link=target)


def chardev(name, major, minor):
    return member(name, tarfile.CHRTYPE, mode=0o666, dev=(major, minor))


def write_tar(path, *items, compression="gz"):
    """Write ``items`` as a tarball at ``path`` exactly as given (no sanitising)."""
    with tarfile.open(path, f"w:{compression}", format=tarfile.GNU_FORMAT) as tar:
        for info, data in items:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def outside(tmp_path):
    """A directory outside every unpack destination that must stay empty."""
    path = tmp_path / "outside"
    path.mkdir()
    return path


@pytest.fixture
def dest(tmp_path):
    (tmp_path / "private").mkdir()
    return tmp_path / "private" / "101"


@pytest.fixture(scope="module")
def busybox_cache(tmp_path_factory):
    if not os.path.exists("/bin/busybox"):
        pytest.skip("busybox-static is not installed: apt-get install busybox-static")
    cache = tmp_path_factory.mktemp("cache")
    build_busybox(cache)
    return cache


# -- busybox ---------------------------------------------------------------------------

def test_build_busybox_is_reproducible(busybox_cache):
    """Building the busybox template twice gives byte-identical tarballs, atomically."""
    first = sha256(cache_path(busybox_cache, "busybox"))
    path = build_busybox(busybox_cache)
    assert path == busybox_cache / "busybox.tar.gz"
    assert sha256(path) == first
    assert sorted(os.listdir(busybox_cache)) == ["busybox.json", "busybox.tar.gz"]


def test_busybox_tarball_has_init_applets_and_config(busybox_cache):
    """The rootfs has busybox, applet links, a tty-less inittab and locked root."""
    with tarfile.open(cache_path(busybox_cache, "busybox")) as tar:
        entries = {m.name: m for m in tar.getmembers()}
        inittab = tar.extractfile("etc/inittab").read().decode()
        passwd = tar.extractfile("etc/passwd").read().decode()
    assert entries["bin/busybox"].isreg() and entries["bin/busybox"].mode == 0o755
    assert entries["sbin/init"].linkname == "../bin/busybox"
    assert entries["bin/sh"].linkname == "busybox"
    assert entries["usr/bin/ar"].linkname == "../../bin/busybox"
    assert entries["tmp"].mode == 0o1777 and entries["root"].mode == 0o700
    assert entries["etc/init.d/rcS"].mode == 0o755
    assert entries["etc/shadow"].mode in (0o600, 0o640)
    assert {(m.uid, m.gid, m.mtime) for m in entries.values()} == {(0, 0, 946684800)}
    assert "::sysinit:/etc/init.d/rcS" in inittab
    # No respawn: a VE without a console terminal keeps no getty (see the console script).
    assert "respawn" not in inittab and "askfirst" not in inittab
    assert "::once:/etc/init.d/console" in inittab
    assert passwd.startswith("root:x:0:0:root:/root:/bin/sh\n")


def test_busybox_metadata_and_listing(busybox_cache):
    """The busybox metadata names its init and the SIGUSR2 poweroff signal."""
    meta = metadata(busybox_cache, "busybox")
    assert (meta.name, meta.distribution, meta.init, meta.stop_signal) == (
        "busybox", "busybox", ("/sbin/init",), "SIGUSR2")
    assert meta.version[0].isdigit() and meta.arch
    assert list_templates(busybox_cache) == [meta]


def test_unpack_busybox_shifts_ids_and_runs(busybox_cache, dest):
    """Unpacked busybox belongs to the VE's root (symlinks too) and its shell runs."""
    unpack(cache_path(busybox_cache, "busybox"), dest, SHIFT)
    root = os.lstat(dest)
    assert (root.st_uid, root.st_gid, stat.S_IMODE(root.st_mode)) == (SHIFT, SHIFT, 0o755)
    for rel in ("bin/busybox", "sbin/init", "usr/bin/ar", "etc", "etc/shadow"):
        st = os.lstat(dest / rel)
        assert (st.st_uid, st.st_gid) == (SHIFT, SHIFT), rel
    assert os.readlink(dest / "sbin/init") == "../bin/busybox"
    assert stat.S_IMODE(os.lstat(dest / "tmp").st_mode) == 0o1777
    out = subprocess.run(["chroot", str(dest), "/bin/sh", "-c", "echo ok"],
                         capture_output=True, text=True, check=True)
    assert out.stdout == "ok\n"


# -- unpack: what a real rootfs needs -------------------------------------------------

def test_unpack_keeps_special_bits_links_and_owners(tmp_path, dest):
    """setuid/setgid/sticky bits, ids, hardlinks, FIFOs and symlinks survive unpack."""
    tarball = write_tar(
        tmp_path / "t.tar.gz",
        directory("./"), directory("usr/bin"), directory("usr/lib"),
        member("usr/bin/su", data=b"su", mode=0o4755),
        member("usr/bin/wall", data=b"w", mode=0o2755, gid=5),
        member("home/user/f", data=b"u", mode=0o600, uid=1000, gid=1000),
        hardlink("usr/bin/su2", "usr/bin/su"),
        symlink("bin", "usr/bin"), symlink("sh", "/bin/busybox"),
        symlink("lib", "usr/lib"), member("lib/libc.so", data=b"c"),  # written via in-tree link
        member("run/initctl", tarfile.FIFOTYPE, mode=0o600),
        directory("var/tmp", mode=0o1777), chardev("dev/null", 1, 3),
    )
    unpack(tarball, dest, SHIFT)
    su = os.lstat(dest / "usr/bin/su")
    assert stat.S_IMODE(su.st_mode) == 0o4755 and su.st_uid == SHIFT
    wall = os.lstat(dest / "usr/bin/wall")
    assert stat.S_IMODE(wall.st_mode) == 0o2755 and wall.st_gid == SHIFT + 5
    assert os.lstat(dest / "home/user/f").st_uid == SHIFT + 1000
    assert os.lstat(dest / "usr/bin/su2").st_ino == su.st_ino
    assert os.lstat(dest / "sh").st_uid == SHIFT and os.readlink(dest / "sh") == "/bin/busybox"
    assert (dest / "usr/lib/libc.so").read_bytes() == b"c"
    assert stat.S_ISFIFO(os.lstat(dest / "run/initctl").st_mode)
    assert stat.S_IMODE(os.lstat(dest / "var/tmp").st_mode) == 0o1777
    assert os.lstat(dest / "usr/bin/su").st_mtime == 1_600_000_000
    assert os.listdir(dest / "dev") == []  # allow-listed devices are skipped
    for rel in ("proc", "sys", "tmp", "root"):
        assert os.lstat(dest / rel).st_uid == SHIFT


def test_later_members_replace_earlier_ones(tmp_path, dest):
    """As with tar, a later file or symlink replaces an earlier non-directory."""
    tarball = write_tar(
        tmp_path / "t.tar.gz",
        member("etc/motd", data=b"old"), hardlink("etc/motd.hard", "etc/motd"),
        member("etc/motd", data=b"new"), symlink("sh", "dash"), symlink("sh", "busybox"),
        member("etc/x"), directory("etc/x"),
    )
    unpack(tarball, dest, SHIFT)
    assert (dest / "etc/motd").read_bytes() == b"new"
    assert (dest / "etc/motd.hard").read_bytes() == b"old"  # never written through
    assert os.readlink(dest / "sh") == "busybox"
    assert (dest / "etc/x").is_dir()


@pytest.mark.parametrize("compression", ["", "xz", "bz2"])
def test_unpack_reads_other_compressions(tmp_path, dest, compression):
    """Plain, xz and bzip2 tarballs unpack like gzip ones."""
    tarball = write_tar(tmp_path / "t", member("etc/x", data=b"1"), compression=compression)
    unpack(tarball, dest, 0)
    assert (dest / "etc/x").read_bytes() == b"1"


def test_unpack_refuses_existing_dest_and_bad_shift(tmp_path, dest):
    """unpack never merges into an existing directory or takes a bad id shift."""
    tarball = write_tar(tmp_path / "t.tar.gz", member("a"))
    dest.mkdir()
    with pytest.raises(AlreadyExists):
        unpack(tarball, dest, 0)
    with pytest.raises(InvalidConfig):
        unpack(tarball, dest.parent / "new", -1)


def test_unpack_refuses_corrupt_tarball(tmp_path, dest):
    """A truncated tarball is InvalidConfig and leaves no destination."""
    good = write_tar(tmp_path / "t.tar.gz", member("a", data=os.urandom(100000)))
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(good.read_bytes()[:50000])
    with pytest.raises(InvalidConfig):
        unpack(bad, dest, 0)
    assert not dest.exists()


# -- unpack: hostile tarballs ---------------------------------------------------------

def hostile_cases(out):
    """Return {case: (members, member named in the error)} for each attack."""
    return {
        "symlink-dir-out": ([symlink("etc", str(out)), member("etc/passwd", data=b"p")],
                            "etc/passwd"),
        "relative-out": ([symlink("x", "../../outside"), member("x/file", data=b"p")], "x/file"),
        "chain-out": ([symlink("a", "b"), symlink("b", str(out)), member("a/f")], "a/f"),
        "overwrite-symlink": ([symlink("evil", str(out / "target")),
            member("evil", data=b"p")], "evil"),
        "dir-over-symlink": ([symlink("d", str(out)), directory("d")], "d"),
        "hardlink-abs": ([hardlink("shadow", "/etc/shadow")], "shadow"),
        "hardlink-dotdot": ([hardlink("s", "../outside/secret")], "s"),
        "hardlink-unknown": ([hardlink("s", "etc/shadow")], "s"),
        "hardlink-via-link": ([symlink("l", str(out)), hardlink("s", "l/secret")], "s"),
        "block-device": ([member("dev/sda", tarfile.BLKTYPE, dev=(8, 0))], "dev/sda"),
        "dev-mem": ([chardev("dev/mem", 1, 1)], "dev/mem"),
        "proc-symlink": ([symlink("proc", "/")], "proc"),
        "sys-file": ([member("sys", data=b"x")], "sys"),
        "dev-symlink": ([symlink("./dev", "/dev")], "./dev"),
        "absolute": ([member("/etc/passwd", data=b"p")], "/etc/passwd"),
        "dotdot": ([member("../outside/f", data=b"p")], "../outside/f"),
        "inner-dotdot": ([member("a/../../outside/f", data=b"p")], "a/../../outside/f"),
        "uid": ([member("f", uid=70000)], "f"),
        "gid": ([member("g", gid=65536)], "g"),
        "file-as-dir": ([member("etc"), member("etc/passwd")], "etc/passwd"),
        "relinked-out": ([directory("sub"), symlink("l", "sub"), member("l/a"),
                          symlink("l", str(out)), member("l/b")], "l/b"),
        "hardlink-over-dir": ([directory("d"), member("f"), hardlink("d", "f")], "d"),
        "file-over-dir": ([directory("d"), member("d", data=b"x")], "d"),
        "symlink-loop": ([symlink("a", "b"), symlink("b", "a"), member("a/f")], "a/f"),
        "empty-symlink": ([symlink("e", "")], "e"),
    }


CASE_IDS = list(hostile_cases(Path("/unused")))


@pytest.mark.parametrize("case", CASE_IDS)
def test_unpack_refuses_hostile_member(tmp_path, outside, case):
    """Each hostile member is refused by name; nothing is left in or outside dest."""
    (outside / "secret").write_bytes(b"s")
    work = tmp_path / "work"
    work.mkdir()
    dest = work / "ve"  # so ../../outside from dest/x reaches tmp_path/outside
    items, name = hostile_cases(outside)[case]
    tarball = write_tar(tmp_path / "t.tar.gz", member("ok", data=b"first"), *items)
    with pytest.raises(InvalidConfig) as err:
        unpack(tarball, dest, SHIFT)
    assert repr(name) in str(err.value)
    assert not dest.exists()
    assert os.listdir(outside) == ["secret"]
    assert os.lstat(outside / "secret").st_uid == 0
    assert os.listdir(work) == []


# -- cache lookup and import ----------------------------------------------------------

def test_cache_path_of_unknown_template_is_not_found(tmp_path):
    """Asking for a template that is not installed says how to get it."""
    with pytest.raises(NotFound, match="vectl template build centos"):
        cache_path(tmp_path, "centos")
    assert list_templates(tmp_path / "missing") == []


@pytest.mark.parametrize("name", ["../etc", "a/b", "", ".hidden", "x..y"])
def test_bad_template_names_are_invalid(tmp_path, name):
    """Template names that could be paths are refused before any file is touched."""
    for call in (lambda: cache_path(tmp_path, name), lambda: metadata(tmp_path, name),
                 lambda: import_tarball(tmp_path, name, tmp_path / "t.tar")):
        with pytest.raises(InvalidConfig):
            call()


def test_import_tarball_installs_and_replaces(tmp_path, dest):
    """An imported tarball becomes a template; a re-import replaces it atomically."""
    cache = tmp_path / "cache"
    plain = write_tar(tmp_path / "rootfs", member("etc/os-release", data=b"1"), compression="")
    assert import_tarball(cache, "mini", plain) == cache / "mini.tar"
    meta = metadata(cache, "mini")
    assert (meta.init, meta.stop_signal, meta.distribution) == (("/sbin/init",), "SIGTERM", "mini")
    gz = write_tar(tmp_path / "rootfs2", member("etc/os-release", data=b"2"))
    import_tarball(cache, "mini", gz, distribution="debian", version="12",
                   stop_signal="SIGINT")
    assert cache_path(cache, "mini") == cache / "mini.tar.gz"
    assert sorted(os.listdir(cache)) == ["mini.json", "mini.tar.gz"]
    assert metadata(cache, "mini").version == "12"
    unpack(cache_path(cache, "mini"), dest, SHIFT)
    assert (dest / "etc/os-release").read_bytes() == b"2"


def test_vectl_imports_a_systemd_template(tmp_path):
    """A systemd distribution's tarball: its poweroff signal and a cgroup2 tree of its own."""
    import json
    import sys
    root = tmp_path / "root"
    tarball = write_tar(tmp_path / "rootfs", member("etc/os-release", data=b"1"))
    out = subprocess.run([sys.executable, "-m", "ve.cli", "--root", str(root), "template",
                          "import", "sd", str(tarball), "--stop-signal", "SIGRTMIN+4",
                          "--cgroup2"], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2])))
    assert out.returncode == 0, out.stderr
    meta = json.loads((root / "template/cache/sd.json").read_text())
    assert (meta["stop_signal"], meta["cgroup2"]) == ("SIGRTMIN+4", True)
    bad = subprocess.run([sys.executable, "-m", "ve.cli", "--root", str(root), "template",
                          "import", "sd", str(tarball), "--stop-signal", "SIGRTMIN+99"],
                         capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2])))
    assert bad.returncode == 2 and "unknown stop signal" in bad.stderr


def test_import_tarball_refuses_hostile_and_leaves_nothing(tmp_path, outside):
    """A hostile tarball is not imported: no cache file, no trial tree, nothing outside."""
    cache = tmp_path / "cache"
    cache.mkdir()
    bad = write_tar(tmp_path / "bad.tar.gz", symlink("etc", str(outside)),
                    member("etc/passwd", data=b"p"))
    with pytest.raises(InvalidConfig, match="etc/passwd"):
        import_tarball(cache, "evil", bad)
    assert os.listdir(cache) == [] and os.listdir(outside) == []
    with pytest.raises(NotFound):
        cache_path(cache, "evil")


def test_metadata_json_is_validated(tmp_path):
    """A template's JSON may set init and stop signal, but only to sane values."""
    write_tar(tmp_path / "mini.tar.gz", member("a"))
    (tmp_path / "mini.json").write_text('{"init": ["/lib/systemd/systemd"], '
                                        '"stop_signal": "SIGRTMIN", "version": "12"}')
    meta = metadata(tmp_path, "mini")
    assert (meta.init, meta.stop_signal, meta.version) == (
        ("/lib/systemd/systemd",), "SIGRTMIN", "12")
    for bad in ('{"init": "sbin/init"}', '{"stop_signal": "SIGNOPE"}', "[1]", "{"):
        (tmp_path / "mini.json").write_text(bad)
        with pytest.raises(InvalidConfig):
            metadata(tmp_path, "mini")
