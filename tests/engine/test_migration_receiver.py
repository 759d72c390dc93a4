"""The receiver a trusted node's key is bound to: what it refuses, run as sshd runs it."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from ve.config import Limits, VEConfig, write

from .conftest import ROOT_DIR


def receive(engine, command):
    """Run the receiver for ``engine``'s node with SSH_ORIGINAL_COMMAND = ``command``."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT_DIR),
           "VE_ROOT": str(engine.layout.root), "VE_CGROUP_PARENT": engine.cgroups.parent,
           "SSH_ORIGINAL_COMMAND": command}
    return subprocess.run([sys.executable, "-s", "-m", "ve.cli", "migration", "receive"],
                          env=env, capture_output=True, text=True, timeout=60)


def answer(done):
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("command", [
    "sh -c id", "bash", "", "begin", "begin 1 2", "restore ../1", "begin 0x10",
    "rsync --server --sender -logDtprSe.iLsfxCIvu . 171/private/",  # reading
    "rsync --server -logDtprSe.iLsfxCIvu . ../../etc/",  # a path out of incoming
    "rsync --server -logDtprSe.iLsfxCIvu . 171/private/../../x",
    "rsync --server -logDtprSe.iLsfxCIvu --log-file=/etc/x . 171/private/",
    "rsync --server -logDtprSe.iLsfxCIvu --temp-dir=/tmp . 171/private/",
    "rsync --server -logDtprSe.iLsfxCIvu . 171/private/",  # before begin 171
])
def test_anything_but_a_migration_is_refused(engine, command):
    done = receive(engine, command)
    assert done.returncode != 0
    assert "refused" in done.stdout + done.stderr or not answer(done)["ok"], done
    assert not os.path.exists(engine.layout.root / "incoming" / "171")


def test_a_config_that_is_not_the_ves_own_or_privileged_is_not_placed(engine):
    assert answer(receive(engine, "begin 171"))["ok"]
    staging = engine.layout.root / "incoming" / "171"
    for cfg, why in ((VEConfig(172, "other.example", "busybox", Limits()), "VE 172's"),
                     (VEConfig(171, "root.example", "busybox", Limits(), privileged=True),
                      "privileged")):
        write(staging / "conf", cfg)
        done = answer(receive(engine, "place 171"))
        assert not done["ok"] and why in done["error"], done
        assert not engine.layout.conf(171).exists()


def test_an_address_of_a_ve_of_this_node_is_not_taken(engine):
    engine.create(VEConfig(173, "here.example", "busybox", Limits(), ips=("198.18.9.77",)))
    assert answer(receive(engine, "begin 171"))["ok"]
    write(engine.layout.root / "incoming" / "171" / "conf",
          VEConfig(171, "thief.example", "busybox", Limits(), ips=("198.18.9.77",)))
    done = answer(receive(engine, "place 171"))
    assert not done["ok"] and "belongs to VE 173" in done["error"], done
    assert not engine.layout.conf(171).exists()
    assert answer(receive(engine, "begin 173")) == {"ok": False, "error":
                                                    "VE 173 already exists on this node"}


def sparse_image(path, size, chunks):
    """A sparse file of ``size`` bytes with random data at each of ``chunks``."""
    from ve.migrate.blocks import CHUNK
    with open(path, "wb") as f:
        f.truncate(size)
        for index in chunks:
            f.seek(index * CHUNK + 100)
            f.write(os.urandom(5000))
    return path


def sync(source, target):
    """One pass of the chunk copy; the bytes of data it sent."""
    import io
    from ve.migrate import blocks
    stream = io.BytesIO()
    sent = blocks.send(source, blocks.digests(target), stream)
    stream.seek(0)
    blocks.receive(target, stream)
    return sent


def test_an_image_is_copied_by_the_chunks_that_hold_data_then_by_the_changed_ones(tmp_path):
    from ve.migrate.blocks import CHUNK
    source = sparse_image(tmp_path / "a.img", 2 << 30, (0, 7, 300))
    target = tmp_path / "b.img"
    assert sync(source, target) == 3 * CHUNK  # 3 chunks of a 2 GiB file, not 2 GiB
    assert target.read_bytes() == source.read_bytes()
    assert os.stat(target).st_blocks * 512 <= 4 * CHUNK  # still sparse
    # The VE writes one chunk and frees (punches) another: only that goes again.
    with open(source, "r+b") as f:
        f.seek(7 * CHUNK + 10)
        f.write(b"changed")
    subprocess.run(["fallocate", "--punch-hole", "--offset", str(300 * CHUNK), "--length",
                    str(CHUNK), str(source)], check=True)
    assert sync(source, target) == CHUNK
    assert target.read_bytes() == source.read_bytes()
    assert sync(source, target) == 0  # nothing left to send


@pytest.mark.parametrize("stream", [
    b"",  # nothing
    (2**60).to_bytes(8, "little"),  # absurd size
    (1 << 20).to_bytes(8, "little") + (5).to_bytes(8, "little") + (1).to_bytes(4, "little")
    + b"x",  # a chunk past the end
    (8 << 20).to_bytes(8, "little") + (0).to_bytes(8, "little") + (100).to_bytes(4, "little")
    + b"short",  # the stream ends inside a chunk
])
def test_a_bad_image_stream_is_refused(tmp_path, stream):
    import io
    from ve.migrate import blocks
    with pytest.raises(ValueError):
        blocks.receive(tmp_path / "b.img", io.BytesIO(stream))


def test_the_image_verbs_want_a_begun_receipt_and_refuse_a_symlink(engine, tmp_path):
    assert not answer(receive(engine, "digests 171"))["ok"]  # nothing begun
    assert answer(receive(engine, "begin 171"))["ok"]
    os.symlink("/etc/passwd", engine.layout.root / "incoming" / "171" / "image")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT_DIR),
           "VE_ROOT": str(engine.layout.root), "VE_CGROUP_PARENT": engine.cgroups.parent,
           "SSH_ORIGINAL_COMMAND": "patch 171"}
    done = subprocess.run([sys.executable, "-s", "-m", "ve.cli", "migration", "receive"],
                          env=env, input=(4096).to_bytes(8, "little") + (2**64 - 1).to_bytes(
                              8, "little") + bytes(4), capture_output=True, timeout=60)
    assert done.returncode != 0 and b"image not taken" in done.stdout, done
    assert os.path.getsize("/etc/passwd") != 4096


# -- a session: many framed requests on one connection ------------------------------

def frame(value):
    """One request frame: a 4-byte little-endian length, then JSON (or raw bytes)."""
    data = value if isinstance(value, bytes) else json.dumps(value).encode()
    return len(data).to_bytes(4, "little") + data


def session(engine, *parts, veid=171):
    """Run a receiver session for VE ``veid`` fed ``parts`` (bytes); return its exit status
    and its answers."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT_DIR),
           "VE_ROOT": str(engine.layout.root), "VE_CGROUP_PARENT": engine.cgroups.parent,
           "SSH_ORIGINAL_COMMAND": f"session {veid}"}
    done = subprocess.run([sys.executable, "-s", "-m", "ve.cli", "migration", "receive"],
                          env=env, input=b"".join(parts), capture_output=True, timeout=60)
    answers, out = [], done.stdout
    while out:
        length = int.from_bytes(out[:4], "little")
        answers.append(json.loads(out[4:4 + length]))
        out = out[4 + length:]
    return done.returncode, answers


def test_a_session_takes_the_steps_of_a_move_on_one_connection(engine, tmp_path):
    import io
    from ve.migrate import blocks
    conf = VEConfig(171, "moved.example", "busybox", Limits())
    write(tmp_path / "conf", conf)
    sent = (tmp_path / "conf").read_bytes()
    image = sparse_image(tmp_path / "a.img", 64 << 20, (1, 5))
    stream = io.BytesIO()
    blocks.send(image, {}, stream)
    status, answers = session(
        engine, frame({"verb": "begin"}), frame({"verb": "digests"}),
        frame({"verb": "patch"}), stream.getvalue(),
        frame({"verb": "state", "files": [["conf", len(sent), 0o600],
                                          ["dump/pages-1.img", 3, 0o644]]}), sent, b"abc",
        frame({"verb": "place"}), frame({"verb": "status"}))
    assert status == 0, answers
    assert answers[0] == {"ok": True}
    assert answers[1] == {"ok": True, "size": 0, "chunks": {}}  # nothing there yet
    assert answers[2:5] == [{"ok": True}] * 3, answers
    assert answers[5] == {"ok": True, "exists": True, "running": False}
    layout = engine.layout
    assert layout.conf(171).read_bytes() == sent
    assert layout.image(171).read_bytes() == image.read_bytes()
    pages = layout.dump(171) / "pages-1.img"
    assert pages.read_bytes() == b"abc" and os.stat(pages).st_mode & 0o7777 == 0o644
    assert os.stat(layout.dump(171)).st_mode & 0o7777 == 0o711  # as checkpoint makes it
    assert not os.path.exists(layout.root / "incoming" / "171")


def pages_chunk(name, offset, data, mode=0o600):
    return frame({"name": name, "offset": offset, "size": len(data), "mode": mode}) + data


def test_pages_are_taken_chunk_by_chunk_while_the_source_still_dumps(engine):
    """``pages``: each pages image grows by chunks in order, interleaved with others;
    the answer says what arrived, and ``state`` then sends only the rest."""
    status, answers = session(
        engine, BEGUN, frame({"verb": "pages"}),
        pages_chunk("dump/pages-1.img", 0, b"abc"),
        pages_chunk("dump/pages-2.img", 0, b"xy", mode=0o644),
        pages_chunk("dump/pages-1.img", 3, b"defg"),
        frame({"end": True}),
        frame({"verb": "state", "files": [["dump/core-1.img", 2, 0o600]]}), b"co",
        frame({"verb": "abort"}))
    assert status == 0, answers
    assert answers[1] == {"ok": True, "files": {"dump/pages-1.img": 7, "dump/pages-2.img": 2}}
    assert answers[2] == {"ok": True}
    dump = engine.layout.root / "incoming" / "171" / "dump"
    assert not dump.exists()  # abort forgot it all


def test_pages_and_state_make_one_checkpoint(engine):
    status, answers = session(
        engine, BEGUN, frame({"verb": "pages"}),
        pages_chunk("dump/pages-1.img", 0, b"abc"), frame({"end": True}),
        frame({"verb": "state", "files": [["dump/core-1.img", 2, 0o600]]}), b"co")
    assert status == 0 and answers[1:] == [{"ok": True, "files": {"dump/pages-1.img": 3}},
                                           {"ok": True}], answers
    dump = engine.layout.root / "incoming" / "171" / "dump"
    assert (dump / "pages-1.img").read_bytes() == b"abc"
    assert (dump / "core-1.img").read_bytes() == b"co"
    assert os.stat(dump / "pages-1.img").st_mode & 0o7777 == 0o600
    assert os.stat(dump).st_mode & 0o7777 == 0o711


def test_a_failed_verb_does_not_end_the_session(engine):
    status, answers = session(engine, frame({"verb": "begin"}), frame({"verb": "place"}),
                              frame({"verb": "abort"}))
    assert status == 0
    assert not answers[1]["ok"] and "nothing was sent" in answers[1]["error"], answers
    assert answers[2] == {"ok": True}


BEGUN, STATUS = frame({"verb": "begin"}), frame({"verb": "status"})


@pytest.mark.parametrize("parts, why", [
    ([BEGUN, frame(b"{not json"), STATUS], "bad frame"),
    ([BEGUN, (1 << 20).to_bytes(4, "little") + b"{}", STATUS], "a frame of 1048576 bytes"),
    ([BEGUN, b"\x05\x00"], "bad frame"),  # cut inside a length
    ([BEGUN, frame({"verb": "sh"}), STATUS], "not a request"),
    ([BEGUN, frame(["begin"]), STATUS], "not a request"),
    ([BEGUN, frame({"verb": "begin", "veid": 1}), STATUS], "not a request"),  # no other VE
    ([frame({"verb": "state", "files": [["conf", 1, 0o600]]}), b"x", STATUS],
     "nothing is being"),
    ([BEGUN, frame({"verb": "state", "files": [["dump/../../../x", 1, 0o600]]}), b"x",
      STATUS], "not a file of"),
    ([BEGUN, frame({"verb": "state", "files": [["../x", 1, 0o600]]}), b"x", STATUS],
     "not a file of"),
    ([BEGUN, frame({"verb": "state", "files": [["private/x", 1, 0o600]]}), b"x", STATUS],
     "not a file of"),
    ([BEGUN, frame({"verb": "state", "files": [["dump/.x", 1, 0o600]]}), b"x", STATUS],
     "not a file of"),
    ([BEGUN, frame({"verb": "state", "files": [["conf", 1, 0o4755]]}), b"x", STATUS],
     "not a file of"),
    ([BEGUN, frame({"verb": "state", "files": [["conf", -1, 0o600]]}), STATUS],
     "not a file of"),
    ([BEGUN, frame({"verb": "state", "files": [["conf", 10, 0o600]]}), b"short"],
     "ended early"),
    ([BEGUN, frame({"verb": "patch"}), (2**60).to_bytes(8, "little"), STATUS],
     "image not taken"),
    ([BEGUN, frame({"verb": "patch", "snapshot": "../../x"}), STATUS], "bad snapshot name"),
    ([BEGUN, frame({"verb": "digests", "snapshot": 1, "other": 2}), STATUS], "not a request"),
    ([BEGUN, frame({"verb": "state", "files": [["snapshots/../x.json", 1, 0o600]]}), b"x",
      STATUS], "not a file of"),
    ([BEGUN, frame({"verb": "state", "files": [["snapshots/a.img", 1, 0o600]]}), b"x",
      STATUS], "not a file of"),
    ([frame({"verb": "pages"}), pages_chunk("dump/pages-1.img", 0, b"x"), STATUS],
     "nothing is being"),
    ([BEGUN, frame({"verb": "pages"}), pages_chunk("dump/core-1.img", 0, b"x"), STATUS],
     "not a chunk of"),
    ([BEGUN, frame({"verb": "pages"}), pages_chunk("conf", 0, b"x"), STATUS],
     "not a chunk of"),
    ([BEGUN, frame({"verb": "pages"}), pages_chunk("dump/../pages-1.img", 0, b"x"), STATUS],
     "not a chunk of"),
    ([BEGUN, frame({"verb": "pages"}), pages_chunk("dump/pages-1.img", 0, b"x", 0o4755),
      STATUS], "not a chunk of"),
    ([BEGUN, frame({"verb": "pages"}), pages_chunk("dump/pages-1.img", 4, b"x"), STATUS],
     "does not start at its beginning"),
    ([BEGUN, frame({"verb": "pages"}), pages_chunk("dump/pages-1.img", 0, b"x"),
      pages_chunk("dump/pages-1.img", 2, b"x"), STATUS], "a chunk at 2, 1 expected"),
    ([BEGUN, frame({"verb": "pages"}), frame({"name": "dump/pages-1.img", "offset": 0,
                                              "size": 5, "mode": 0o600}) + b"ab"],
     "ended early"),
    ([BEGUN, frame({"verb": "pages"}), pages_chunk("dump/pages-1.img", 0, b"x")],
     "ended early"),
    ([BEGUN, frame({"verb": "pages"}), frame({"name": "dump/pages-1.img", "offset": 0,
                                              "size": 2**60, "mode": 0o600}), STATUS],
     "more pages than"),
])
def test_a_bad_session_request_is_refused_and_ends_the_session(engine, parts, why):
    status, answers = session(engine, *parts)
    assert status != 0
    assert not answers[-1]["ok"] and why in answers[-1]["error"], answers
    assert not any("exists" in a for a in answers), answers  # status was never answered
    assert not os.path.exists("/x") and not engine.layout.conf(171).exists()


def test_state_files_go_through_no_symlink_planted_in_incoming(engine, tmp_path):
    """rsync (a directory VE's files) can make symlinks in incoming/VEID: state never
    writes through one."""
    assert answer(receive(engine, "begin 171"))["ok"]
    staging = engine.layout.root / "incoming" / "171"
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, staging / "dump")
    os.symlink(outside / "conf", staging / "conf")
    status, answers = session(
        engine, frame({"verb": "state", "files": [["conf", 1, 0o600]]}), b"x",
        frame({"verb": "state", "files": [["dump/pages-1.img", 1, 0o600]]}), b"y")
    assert answers[0] == {"ok": True}  # the symlink replaced, not followed
    assert not os.path.islink(staging / "conf") and (staging / "conf").read_bytes() == b"x"
    assert status != 0 and "dump is not a directory" in answers[1]["error"], answers
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("name", ["dump", "private", "image", "counters", "snapshots"])
def test_a_state_part_sent_as_a_symlink_is_not_placed(engine, tmp_path, name):
    """rsync may leave symlinks in incoming/VEID: the VE's checkpoint, files, image or
    totals are never taken from wherever one points."""
    assert answer(receive(engine, "begin 171"))["ok"]
    staging = engine.layout.root / "incoming" / "171"
    write(staging / "conf", VEConfig(171, "planted.example", "busybox", Limits()))
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", staging / name)
    done = answer(receive(engine, "place 171"))
    assert not done["ok"] and f"{name} sent as a symlink" in done["error"], done
    assert not engine.layout.conf(171).exists()
    assert not os.path.lexists(engine.layout.dump(171))


def test_pages_go_through_no_symlink_planted_in_incoming(engine, tmp_path):
    """A symlink in place of the images directory or of a pages image is never written
    through."""
    assert answer(receive(engine, "begin 171"))["ok"]
    staging = engine.layout.root / "incoming" / "171"
    outside = tmp_path / "outside"
    outside.mkdir()
    (staging / "dump").mkdir()
    os.symlink(outside / "pages-1.img", staging / "dump" / "pages-1.img")
    status, answers = session(engine, frame({"verb": "pages"}),
                              pages_chunk("dump/pages-1.img", 0, b"x"), frame({"end": True}))
    assert status == 0 and answers[0]["ok"], answers
    assert (staging / "dump" / "pages-1.img").read_bytes() == b"x"
    assert not os.path.islink(staging / "dump" / "pages-1.img")
    shutil.rmtree(staging / "dump")
    os.symlink(outside, staging / "dump")
    status, answers = session(engine, frame({"verb": "pages"}),
                              pages_chunk("dump/pages-1.img", 0, b"y"), frame({"end": True}))
    assert status != 0 and "dump is not a directory" in answers[0]["error"], answers
    assert list(outside.iterdir()) == []
