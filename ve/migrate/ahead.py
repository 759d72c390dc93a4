"""A checkpoint's memory pages on their way to the target while criu still writes them.

During a live move the VE is frozen from the start of its dump until the target
runs it. criu writes the pages (most of a checkpoint: all the memory the VE's
processes touched) to pages-N.img files, front to back, as it drains them from
the frozen processes; the target's receiver (``receive._take_pages``) takes them
as they grow, so the copy to the target and the dump overlap instead of following
each other. The source keeps its whole checkpoint: a move that fails later still
restores the VE here from it.
"""

import os
import re
import threading

from ..errors import ResourceError
from ..log import get as get_logger
from . import receive

log = get_logger(__name__)

PAGES = re.compile(r"pages-[0-9]{1,9}\.img")
CHUNK = 8 << 20  # bytes per frame: few frames, and the target writes while we read
POLL_SECONDS = 0.005  # how soon a file's growth is sent (criu writes ~7 MiB at a time)


class PagesAhead:
    """Follow criu's images directory from ``start(path)`` until ``finish()``, sending
    every pages image's new bytes to the target as one ``pages`` request of
    ``channel``'s session (ve/engine/migration.py's _Channel)."""

    def __init__(self, channel, veid):
        self.channel, self.veid = channel, veid
        self.sent = {}  # "dump/pages-N.img" -> bytes the target has
        self._done = threading.Event()
        self._thread = None
        self._error = None

    def start(self, directory):
        """Begin following ``directory`` (made empty by the caller, before criu runs)."""
        # A directory fd outlives the checkpoint's rename of the directory.
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, args=(fd,), daemon=True,
                                        name=f"pages-ahead-{self.veid}")
        self._thread.start()

    def finish(self):
        """The dump ended (or failed): send what is left, end the stream, wait for the
        target's answer; return {name: size} of the images the target now holds.
        Never raises: after a failure ({} returned, the cause logged) the images go
        with the rest of the state (a receiver that does not know ``pages``, say)."""
        if self._thread is None:
            return {}
        self._done.set()
        self._thread.join()
        if self._error is not None:
            log.warning("VE %s: the pages could not go ahead of the dump (%s); they go "
                        "with the rest of its state", self.veid, self._error.message)
            return {}
        return self.sent

    def _run(self, directory):
        try:
            answer = self.channel.request(self.veid, {"verb": "pages"},
                                           lambda out: self._stream(directory, out))
            if answer.get("files") != self.sent:
                raise ResourceError(f"{self.channel.target}: pages: the target has "
                                    f"{answer.get('files')}, {self.sent} were sent", self.veid)
        except ResourceError as exc:
            self._error = exc
        except Exception as exc:  # noqa: BLE001 - a thread's failure must reach finish()
            self._error = ResourceError(f"sending the pages failed: {exc}", self.veid)
        finally:
            os.close(directory)

    def _stream(self, directory, out):
        followed = {}  # name -> (fd, bytes sent)
        try:
            while True:
                last = self._done.is_set()  # once set, this pass sends everything
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if PAGES.fullmatch(entry.name) and entry.name not in followed:
                            followed[entry.name] = (
                                os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                        dir_fd=directory), 0)
                moved = 0
                for name, (fd, offset) in list(followed.items()):
                    sent = _send_growth(out, name, fd, offset)
                    followed[name] = (fd, offset + sent)
                    moved += sent
                if last:
                    break
                if not moved:
                    self._done.wait(POLL_SECONDS)
            receive.write_frame(out, {"end": True})
        finally:
            for fd, _ in followed.values():
                os.close(fd)
            self.sent = {f"dump/{name}": sent for name, (_, sent) in followed.items()}


def _send_growth(out, name, fd, offset):
    """Send what file ``fd`` holds past ``offset`` as chunks; return how many bytes."""
    st = os.fstat(fd)
    size, sent = st.st_size, 0
    while offset + sent < size:
        length = min(CHUNK, size - offset - sent)
        receive.write_frame(out, {"name": f"dump/{name}", "offset": offset + sent,
                                  "size": length, "mode": st.st_mode & 0o644})
        _sendfile(out.fileno(), fd, offset + sent, length)
        sent += length
    return sent


def _sendfile(out, fd, offset, length):
    end = offset + length
    while offset < end:
        done = os.sendfile(out, fd, offset, end - offset)
        if done == 0:
            raise ValueError("a pages image shrank while it was sent")
        offset += done
