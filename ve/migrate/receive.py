"""The receiving end of a migration: the forced command of the keys a node trusts.

sshd runs ``vectl migration receive`` (for this node's VE_ROOT and cgroup
parent) for every connection of a trusted node, with what the other side asked
for in SSH_ORIGINAL_COMMAND; ``handle`` answers it. Only these are taken:

    rsync --server ...     rsync into incoming/VEID (after begin), the options a
                           migration sends and nothing else (no --sender: it
                           cannot read; no option naming a path)
    begin VEID             a fresh incoming/VEID (refused if the VE is here)
    restore VEID           put incoming/VEID in place and restore its checkpoint
    start VEID             put it in place and start it (an offline move)
    place VEID             put it in place, stopped (a stopped VE's move)
    abort VEID             forget incoming/VEID, and a VE placed from it that
                           does not run
    status VEID            {"exists", "running"}
    digests VEID           the chunks of incoming/VEID/image that hold data
    patch VEID             change that image by the stream on stdin
    session VEID           all of the above but rsync, for that VE, as a sequence
                           of framed requests on one connection (below)

Each verb but rsync and session is answered with one JSON line; the exit status
is 0 on success.

A session spares the sender an SSH handshake and a start of this program for
each step (while a live move has the VE frozen, these were most of the
downtime), and carries the small state files (config, traffic totals,
checkpoint images) itself; ``pages`` takes a checkpoint's memory pages while
criu still writes them at the source (the VE is frozen meanwhile). Both ways a
frame is a 4-byte little-endian length and that many bytes of a JSON object. A
request is {"verb": NAME, ...} and gets exactly one answer, {"ok": ...} as the
one-shot verbs give; ``patch`` is followed by the image stream of
``blocks.send`` (with "snapshot": NAME, ``digests`` and ``patch`` are about
that snapshot's image instead of the VE's), ``state`` by the bytes of the files
it lists, one after the other, and ``pages`` by chunks (``_take_pages``). A request that is not
understood, a frame longer than MAX_REQUEST, or a payload refused (its data can
then not be told from the next request) is answered {"ok": false} and ends the
session; a verb that fails on its own merits (a restore, say) does not.
"""

import errno
import io
import json
import os
import re
import shlex
import shutil
import struct

from .. import validate, watch
from . import blocks, warm_imports
from ..errors import VEError

# What the sending engine's rsync asks of the server (ve/engine/migration.py), and no
# more: the short options as one bundle (before "e."), then these long ones. (Debian's
# rrsync does this kind of check, but its 3.5 fails to replace a file in place.)
SHORT_OPTIONS = re.compile(r"-[lHogDtpAXrS]+e\.[A-Za-z]+")
LONG_OPTIONS = {"--timeout=60", "--delete", "--partial", "--numeric-ids"}
DESTINATION = re.compile(r"([0-9]{1,10})/(private/|layer/)?")
LAYER = "layer"  # in incoming/VEID: a shared-template VE's layer, if it was sent
LAYER_ID = "layer-id"  # ... and the id of the layer its image names
PLACED = ".placed"  # in incoming/VEID: the VE was put in place from it
MAX_REQUEST = 64 << 10  # bytes of a session request's JSON: a state list is ~4 KiB
MAX_ANSWER = 64 << 20  # what the sender reads of an answer (digests of a large image)
# The files ``state`` may write in incoming/VEID: the config, the traffic totals,
# criu's images (flat names, as criu writes them) and snapshot records, nothing else.
STATE_FILE = re.compile(r"conf|counters|dump/[A-Za-z0-9][A-Za-z0-9._-]{0,120}|"
                        r"snapshots/[A-Za-z0-9][A-Za-z0-9._-]{0,39}\.json")
SNAPSHOTS = "snapshots"  # in incoming/VEID: the VE's snapshots (NAME.img, NAME.json)
# The memory pages of a checkpoint, which ``pages`` takes while criu writes them.
PAGES_FILE = re.compile(r"dump/pages-[0-9]{1,9}\.img")
MAX_STATE_FILES = 4096
_LENGTH = struct.Struct("<I")


def handle(engine, command, stdin=None):
    """Answer one request (``command``: SSH_ORIGINAL_COMMAND) as a dict: {"ok", ...}.

    An rsync that may run is answered {"ok": True, "exec": argv, "cwd": directory}:
    the caller (vectl) becomes that rsync.
    """
    words = shlex.split(command)
    incoming = os.path.join(engine.layout.root, "incoming")
    os.makedirs(incoming, mode=0o700, exist_ok=True)
    if words[:2] == ["rsync", "--server"]:
        refusal = _rsync_refusal(words, incoming)
        if refusal:
            return _answer(False, f"refused: {refusal}")
        return _answer(True, exec=["/usr/bin/rsync", *words[1:]], cwd=incoming)
    if len(words) != 2 or words[0] not in {**VERBS, **STREAMED, "session": None}:
        return _answer(False, f"refused: {' '.join(words)[:80]!r} is not a migration verb")
    try:
        veid = validate.veid(words[1])
        staging = os.path.join(incoming, str(veid))
        if words[0] == "session":
            return _answer(True, session=veid)  # vectl then runs ``session``
        if words[0] in STREAMED:
            if not os.path.isdir(staging):
                return _answer(False, f"nothing is being received for VE {veid}")
            return STREAMED[words[0]](os.path.join(staging, "image"), stdin)
        return VERBS[words[0]](engine, veid, staging)
    except VEError as exc:
        return _answer(False, str(exc))


def _rsync_refusal(words, incoming):
    """Why ``words`` is not an rsync server a migration may run here, or None."""
    if len(words) < 5 or words[-2] != "." or not SHORT_OPTIONS.fullmatch(words[2]):
        return "not a migration's rsync"
    unknown = [word for word in words[3:-2] if word not in LONG_OPTIONS]
    if unknown:
        return f"rsync option {unknown[0]!r} is not taken"
    target = DESTINATION.fullmatch(words[-1])
    if not target or not os.path.isdir(os.path.join(incoming, target.group(1))):
        return f"{words[-1]!r} is not a place for a VE being received"
    return None


def begin(engine, veid, staging):
    if engine.layout.conf(veid).exists():
        return _answer(False, f"VE {veid} already exists on this node")
    warm_imports()  # a session's restore then finds them loaded
    # and a watcher running to restore it (not started while the VE is frozen)
    watch.available(engine.layout, engine.cgroups.parent)
    shutil.rmtree(staging, ignore_errors=True)
    os.mkdir(staging, 0o700)
    return _answer(True)


def restore(engine, veid, staging):
    return _bring_up(engine, veid, staging, engine.restore)


def start(engine, veid, staging):
    # An offline move starts the VE afresh: pages sent before its checkpoint failed
    # must not become a checkpoint its start would resume.
    shutil.rmtree(os.path.join(staging, "dump"), ignore_errors=True)
    return _bring_up(engine, veid, staging, engine.start)


def _bring_up(engine, veid, staging, verb):
    """Put the VE in place and restore or start it; on failure nothing stays placed."""
    _place(engine, veid, staging)
    try:
        pid = verb(veid)
    except VEError:
        _unplace(engine, veid, staging)
        raise
    _done(staging)
    return _answer(True, init_pid=pid)


def place(engine, veid, staging):
    _place(engine, veid, staging)
    _done(staging)
    return _answer(True)


def abort(engine, veid, staging):
    if os.path.exists(os.path.join(staging, PLACED)):
        _unplace(engine, veid, staging)
    shutil.rmtree(staging, ignore_errors=True)
    return _answer(True)


def status(engine, veid, staging):
    exists = engine.layout.conf(veid).exists()
    running = exists and engine.status(veid).state == "running"
    return _answer(True, exists=exists, running=running)


VERBS = {"begin": begin, "restore": restore, "start": start, "place": place, "abort": abort,
         "status": status}


def image_digests(path, stdin):
    try:
        return _answer(True, **blocks.digests(path))
    except OSError as exc:  # a symlink planted there (O_NOFOLLOW), say
        return _answer(False, f"image not readable: {exc}")


def image_patch(path, stdin):
    try:
        blocks.receive(path, stdin)
    except (OSError, ValueError) as exc:
        return _answer(False, f"image not taken: {exc}")
    return _answer(True)


# The disk image in incoming/VEID, chunk by chunk (ve/migrate/blocks.py).
STREAMED = {"digests": image_digests, "patch": image_patch}


def _place(engine, veid, staging):
    """Move what the source sent into this node's VE_ROOT (its config written last)."""
    from ..errors import AlreadyExists, InvalidConfig, NotFound
    layout = engine.layout
    if layout.conf(veid).exists():
        raise AlreadyExists("the VE already exists on this node", veid)
    conf = os.path.join(staging, "conf")
    if not os.path.exists(conf):
        raise NotFound("nothing was sent for this VE", veid)
    _check_config(engine, veid, conf)
    layout.ensure()
    moves = [("private", layout.private(veid)), ("image", layout.image(veid)),
             ("dump", layout.dump(veid)), ("counters", layout.counters(veid)),
             (SNAPSHOTS, layout.snapshots(veid))]
    # rsync (a directory VE's files) may make symlinks in incoming/VEID: none of these
    # may be one, or the VE's checkpoint or disk would be whatever it points at.
    planted = [name for name in [*dict(moves), LAYER]
               if os.path.islink(os.path.join(staging, name))]
    if planted:
        raise InvalidConfig(f"refused: {', '.join(planted)} sent as a symlink", veid)
    _take_layer(layout, staging)
    for name, target in moves:
        source = os.path.join(staging, name)
        if os.path.lexists(source):
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            os.rename(source, target)
    layout.mountpoint(veid).mkdir(mode=0o700, exist_ok=True)
    if layout.image(veid).exists():  # the image's mount point
        layout.private(veid).mkdir(mode=0o700, exist_ok=True)
    open(os.path.join(staging, PLACED), "w").close()
    os.rename(conf, layout.conf(veid))


def _take_layer(layout, staging):
    """Keep the layer sent with the VE, unless this node has it (of its own, or
    received with another VE) by now."""
    from ..storage import layers
    sent = os.path.join(staging, LAYER)
    if not os.path.isdir(sent):
        return
    fd = os.open(os.path.join(staging, LAYER_ID), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, closefd=True) as f:
        layer_id = layers.check_id(f.read(128).strip())
    if layers.find(layout, layer_id) is None:
        target = layers.received(layout, layer_id)
        os.makedirs(target.parent, mode=0o700, exist_ok=True)
        os.rename(sent, target)


def _check_config(engine, veid, path):
    """A config pushed by another node gets what a VE of this node could have, no more:
    its own VEID, an unprivileged user namespace, addresses no VE here has."""
    from .. import config as conf
    from ..errors import InvalidConfig
    if os.path.islink(path) or not os.path.isfile(path):
        raise InvalidConfig("the VE's config is not a file", veid)
    cfg = conf.read(path)
    if cfg.veid != veid:
        raise InvalidConfig(f"the config sent is VE {cfg.veid}'s", veid)
    if cfg.privileged:
        raise InvalidConfig("a privileged VE (no user namespace) is not taken by migration: "
                            "staff move it by hand", veid)
    engine._check_ips_free(cfg)


def _unplace(engine, veid, staging):
    """Remove a VE placed from ``staging`` that did not come up (nothing else is touched)."""
    if engine.layout.conf(veid).exists() and engine.status(veid).state != "running":
        engine.destroy(veid)
    try:
        os.unlink(os.path.join(staging, PLACED))
    except FileNotFoundError:
        pass


def _done(staging):
    shutil.rmtree(staging, ignore_errors=True)


def _answer(ok, error=None, **values):
    return {"ok": ok, **({"error": error} if error else {}), **values}


# -- a session: many requests on one connection -------------------------------------


class Refused(ValueError):
    """A session request that ends the session (its stream cannot be followed further)."""


def session(engine, veid, stdin, stdout):
    """Answer framed requests about VE ``veid`` from ``stdin`` on ``stdout`` until the
    sender closes it; return the exit status (0: it ended cleanly). ``stdin`` may be
    unbuffered (io.FileIO, whose reads may be short): files then come by splice(2)."""
    staging = os.path.join(engine.layout.root, "incoming", str(veid))
    while True:
        try:
            request = read_frame(stdin, MAX_REQUEST)
            if request is None:
                return 0
            answer = _session_request(engine, veid, staging, request, stdin)
        except Refused as exc:
            write_frame(stdout, _answer(False, f"refused: {exc}"))
            return 1
        except VEError as exc:
            answer = _answer(False, str(exc))
        write_frame(stdout, answer)


def _session_request(engine, veid, staging, request, stdin):
    verb = request.get("verb") if isinstance(request, dict) else None
    if verb in VERBS and set(request) == {"verb"}:
        return VERBS[verb](engine, veid, staging)
    if verb in STREAMED and set(request) <= {"verb", "snapshot"}:
        if not os.path.isdir(staging):
            raise Refused(f"nothing is being received for VE {veid}")
        answer = STREAMED[verb](_streamed_file(staging, request.get("snapshot")), stdin)
        if verb == "patch" and not answer["ok"]:
            raise Refused(answer["error"])  # the rest of its stream is unknown
        return answer
    if verb == "state" and set(request) == {"verb", "files"}:
        return _take_state(staging, request["files"], stdin)
    if verb == "pages" and set(request) == {"verb"}:
        return _take_pages(staging, stdin)
    if verb == "layer" and set(request) == {"verb", "id"}:
        return _layer(engine, staging, request["id"])
    raise Refused(f"{str(request)[:80]!r} is not a request of a migration")


def _layer(engine, staging, layer_id):
    """Whether this node has the layer a shared-template VE's image names (or made it
    now from its own copy of that template tarball); noted for ``_place``. A layer
    the sender then sends is taken into ``layers/received``, never the node's own."""
    from ..storage import layers
    try:
        layer_id = layers.check_id(layer_id)
    except VEError as exc:
        raise Refused(str(exc)) from exc
    if not os.path.isdir(staging):
        raise Refused("nothing is being received for this VE")
    with open(os.path.join(staging, LAYER_ID), "w") as f:
        f.write(layer_id + "\n")
    have = layers.find(engine.layout, layer_id) is not None or \
        layers.from_own_template(engine.layout, layer_id)
    return _answer(True, have=have)


def _streamed_file(staging, snapshot_name):
    """The file a digests or patch request is about: the VE's image, or the image of
    its snapshot ``snapshot_name``. A new snapshot starts as a reflink of the image
    received so far, where this node's filesystem can: only what differs is sent."""
    image = os.path.join(staging, "image")
    if snapshot_name is None:
        return image
    try:
        name = validate.snapshot_name(snapshot_name)
    except VEError as exc:
        raise Refused(str(exc)) from exc
    folder = os.path.join(staging, SNAPSHOTS)
    if os.path.islink(folder):
        raise Refused(f"{SNAPSHOTS} is a symlink")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    path = os.path.join(folder, f"{name}.img")
    if not os.path.lexists(path) and os.path.isfile(image) and not os.path.islink(image):
        from ..storage import snapshot
        try:
            snapshot.reflink(image, path)
        except OSError:
            pass  # sent whole, then
    return path


def _take_state(staging, files, stdin):
    """Write the files listed (``[[name, size, mode], ...]``), whose bytes follow on
    ``stdin``, into ``staging``: only the names STATE_FILE allows and modes within
    0644 (criu makes its images so), each file made afresh, root's, and never through
    a symlink (rsync may have put one there)."""
    if not isinstance(files, list) or len(files) > MAX_STATE_FILES:
        raise Refused("not a list of files")
    for entry in files:  # all checked before any byte is taken
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                and STATE_FILE.fullmatch(entry[0]) and type(entry[1]) is int
                and 0 <= entry[1] <= blocks.MAX_SIZE and type(entry[2]) is int
                and entry[2] & ~0o644 == 0):
            raise Refused(f"{str(entry)[:80]!r} is not a file of a VE's state")
    top = _staging_dir(staging)
    folders = {}  # "dump" or "snapshots" -> its fd
    try:
        for name, size, mode in files:
            where, base = top, name
            if "/" in name:
                folder, base = name.split("/")
                if folder not in folders:
                    folders[folder] = (_images_dir(top) if folder == "dump"
                                       else _subdir(top, folder))
                where = folders[folder]
            try:
                _copy_in(where, base, stdin, size, mode)
            except OSError as exc:
                raise Refused(f"{name} not taken: {exc}") from exc
    finally:
        os.close(top)
        for fd in folders.values():
            os.close(fd)
    return _answer(True)


def _take_pages(staging, stdin):
    """Take a checkpoint's memory pages while criu writes them at the source
    (ve/migrate/ahead.py): frames {"name", "offset", "size", "mode"}, each followed by
    its bytes, until {"end": true}. Each file (a name PAGES_FILE allows) is made
    afresh at its first chunk (offset 0) and only ever appended to, in order."""
    top = _staging_dir(staging)
    dump, files, total = None, {}, 0  # files: name -> [fd, bytes so far]
    try:
        dump = _images_dir(top)
        while True:
            chunk = read_frame(stdin, MAX_REQUEST)
            if chunk is None:
                raise Refused("the stream ended early")
            if chunk == {"end": True}:
                break
            if not (isinstance(chunk, dict) and set(chunk) == {"name", "offset", "size", "mode"}
                    and isinstance(chunk["name"], str) and PAGES_FILE.fullmatch(chunk["name"])
                    and all(type(chunk[key]) is int and chunk[key] >= 0
                            for key in ("offset", "size", "mode"))
                    and chunk["mode"] & ~0o644 == 0):
                raise Refused(f"{str(chunk)[:80]!r} is not a chunk of a checkpoint's pages")
            name, size = chunk["name"], chunk["size"]
            total += size
            if total > blocks.MAX_SIZE:
                raise Refused("more pages than a VE can have")
            if name not in files:
                if chunk["offset"] != 0 or len(files) >= MAX_STATE_FILES:
                    raise Refused(f"{name} does not start at its beginning")
                try:
                    files[name] = [_new_file(dump, name[len("dump/"):], chunk["mode"]), 0]
                except OSError as exc:
                    raise Refused(f"{name} not taken: {exc}") from exc
            fd, written = files[name]
            if chunk["offset"] != written:
                raise Refused(f"{name}: a chunk at {chunk['offset']}, {written} expected")
            try:
                _write_from(stdin, fd, size)
            except OSError as exc:
                raise Refused(f"{name} not taken: {exc}") from exc
            files[name][1] += size
    finally:
        for fd, _ in files.values():
            os.close(fd)
        os.close(top)
        if dump is not None:
            os.close(dump)
    return _answer(True, files={name: written for name, (_, written) in files.items()})


def _staging_dir(staging):
    try:
        return os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise Refused("nothing is being received for this VE") from exc


def _images_dir(top):
    """The dump directory in staging (fd ``top``), made as checkpoint makes it: 0711,
    criu looks for optional images in it as the VE's root."""
    try:
        os.mkdir("dump", 0o700, dir_fd=top)
        os.chmod("dump", 0o711, dir_fd=top)
    except FileExistsError:
        pass
    try:
        return os.open("dump", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                       dir_fd=top)
    except OSError as exc:
        raise Refused(f"dump is not a directory: {exc}") from exc


def _subdir(top, name):
    """Directory ``name`` of staging (fd ``top``), made if missing, never a symlink."""
    try:
        os.mkdir(name, 0o700, dir_fd=top)
    except FileExistsError:
        pass
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                       dir_fd=top)
    except OSError as exc:
        raise Refused(f"{name} is not a directory: {exc}") from exc


def _copy_in(directory, name, stdin, size, mode):
    """Copy ``size`` bytes of ``stdin`` into a fresh file ``name`` (``mode``) of fd
    ``directory``."""
    fd = _new_file(directory, name, mode)
    try:
        _write_from(stdin, fd, size)
    finally:
        os.close(fd)


def _new_file(directory, name, mode):
    """A fresh empty file ``name`` (``mode``) in fd ``directory``, open for writing."""
    try:
        os.unlink(name, dir_fd=directory)  # a file sent twice, or a symlink rsync left
    except FileNotFoundError:
        pass
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=directory)
    try:
        os.fchmod(fd, mode)
    except OSError:
        os.close(fd)
        raise
    return fd


def _write_from(stdin, fd, size):
    """Write the next ``size`` bytes of ``stdin`` to file ``fd``."""
    left = _splice(stdin, fd, size)
    while left:
        data = stdin.read(min(left, 1 << 20))
        if not data:
            raise Refused("the stream ended early")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        left -= len(data)


def _splice(stdin, fd, size):
    """Move up to ``size`` bytes of ``stdin`` into file ``fd`` by splice(2), without
    copying them through this process (a checkpoint's pages are most of a frozen VE's
    state); return how many are left for read and write. Only an unbuffered stdin
    (io.FileIO) is spliced: a buffered one may hold bytes its descriptor no longer has."""
    if not isinstance(stdin, io.FileIO):
        return size
    left = size
    while left:
        try:
            moved = os.splice(stdin.fileno(), fd, min(left, 1 << 30))
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOSYS):
                return left  # stdin is not a pipe (a socket, a file): read and write
            raise
        if not moved:
            raise Refused("the stream ended early")
        left -= moved
    return 0


def read_frame(stream, limit):
    """The JSON object of the next frame of ``stream``; None at its end (between frames).
    Refused when it is longer than ``limit`` bytes, cut short, or not JSON."""
    head = stream.read(_LENGTH.size)
    if not head:
        return None
    try:
        if len(head) < _LENGTH.size:
            head += blocks.exactly(stream, _LENGTH.size - len(head))
        (length,) = _LENGTH.unpack(head)
        if length > limit:
            raise Refused(f"a frame of {length} bytes (at most {limit})")
        return json.loads(blocks.exactly(stream, length))
    except Refused:
        raise
    except ValueError as exc:  # cut short, or not JSON
        raise Refused(f"a bad frame: {exc}") from exc


def write_frame(stream, value):
    """Write ``value`` (JSON) as one frame, and flush."""
    data = json.dumps(value).encode()
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()
