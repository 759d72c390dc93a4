"""The C program that starts VEs' inits: built per version of its source, and its
hand-shake with the engine."""

import os

import pytest

from ve.kernel import spawn_helper


@pytest.fixture
def private_build(tmp_path, monkeypatch):
    """Build into a directory of this test's, from a copy of the source it may edit."""
    source = tmp_path / "spawn_init.c"
    source.write_bytes(open(spawn_helper.SOURCE, "rb").read())
    monkeypatch.setattr(spawn_helper, "SOURCE", str(source))
    monkeypatch.setattr(spawn_helper, "BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.setattr(spawn_helper, "_known", {})
    return source


def test_it_is_built_once_and_an_edited_source_gets_a_new_binary(private_build):
    first = spawn_helper.path()
    assert os.access(first, os.X_OK) and first.startswith(spawn_helper.BUILD_DIR)
    built_at = os.stat(first).st_mtime_ns
    spawn_helper._known.clear()  # a new process: finds the binary, does not rebuild
    assert spawn_helper.path() == first and os.stat(first).st_mtime_ns == built_at
    private_build.write_text(private_build.read_text() + "\n/* edited */\n")
    assert spawn_helper.path() == first  # this process keeps the program it began with
    spawn_helper._known.clear()  # a new process
    second = spawn_helper.path()
    assert second != first and os.access(second, os.X_OK)
    assert not [name for name in os.listdir(spawn_helper.BUILD_DIR) if name.endswith(".tmp")]


def test_a_source_that_does_not_compile_is_a_clear_error(private_build):
    private_build.write_text("this is not C\n")
    with pytest.raises(OSError, match="cannot build the VE spawner"):
        spawn_helper.path()
    assert not [name for name in os.listdir(spawn_helper.BUILD_DIR) if name.endswith(".tmp")]


def test_lines_that_arrive_together_are_read_one_by_one():
    """The setup process's "pid N" and "unshared" may be in the pipe at once; the
    hand-shake must still see two lines (it waited forever once)."""
    from ve.kernel import spawn
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"pid 4242\nunshared\n4243\n")
        os.close(write_end)
        assert [spawn._read_line(read_end) for _ in range(4)] == \
            ["pid 4242", "unshared", "4243", ""]
    finally:
        os.close(read_end)


def test_an_answer_out_of_order_is_an_error_not_a_wait():
    """The hand-shake refuses a line it did not expect instead of waiting for another."""
    from ve.kernel import spawn
    assert spawn._expect("pid 12", "pid ") == "pid 12"
    assert spawn._expect("", "pid ") == ""
    assert spawn._expect("unshared", "unshared") == "unshared"
    assert spawn._expect("4243", "") == "4243"
    for line, prefix in (("unshared", "pid "), ("pid 12", "unshared"), ("unshared", ""),
                         ("pid x", "pid ")):
        with pytest.raises(OSError, match="VE spawner answered"):
            spawn._expect(line, prefix)


def test_a_spec_cut_short_starts_nothing():
    """A spec without its end record (its writer was interrupted) is refused before
    the program does anything: one missing its masks must never start a VE."""
    from ve.kernel import spawn
    payload = spawn._encode(spawn.InitSpec(private="/nonexistent", mountpoint="/nonexistent",
                                           hostname="x", argv=("/bin/true",), env=(),
                                           cgroup_files=(), idmap_base=0))
    assert payload.endswith(b"Z\0\0\0\0")
    spec_r, spec_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    up_r, up_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = spawn._start_helper(spawn_helper.path(),
                                  {spawn.FD_SPEC: spec_r, spawn.FD_ERR: err_w,
                                   spawn.FD_UP: up_w})
        for fd in (spec_r, err_w, up_w):
            os.close(fd)
        os.write(spec_w, payload[:-5])
        os.close(spec_w)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 1
        assert spawn._read_all(err_r) == "setup: incomplete spec"
        assert spawn._read_line(up_r) == ""  # it never announced a setup process
    finally:
        for fd in (err_r, up_r):
            os.close(fd)
