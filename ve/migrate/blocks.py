"""Copying a VE's disk image to another node by its changed chunks.

rsync reads a sparse image whole on both sides (a 2 GiB image of 40 MiB of
data is 2 GiB of zeros to checksum), and trusts the file's time to skip it;
while a VE is frozen for a live move neither will do. Here each side hashes
only the 4 MiB chunks that hold data (SEEK_DATA), the target says what it has,
and the source sends the chunks that differ and names the ones that became
holes. The first copy is the same exchange against an empty target.

The stream (``send`` writes it, ``receive`` applies it): the image's size as
8 bytes, then frames of (chunk index: 8 bytes, length: 4 bytes, data), length
0 meaning "this chunk is zeros"; an index of 2**64-1 ends it. Little-endian.
"""

import hashlib
import os
import struct

from ..fsutil import data_ranges

CHUNK = 4 << 20
END = 2**64 - 1
MAX_SIZE = 64 << 40  # no VE disk is larger: a bigger size is a bad stream
_FRAME = struct.Struct("<QI")
_SIZE = struct.Struct("<Q")
_FALLOC_PUNCH = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE


def digests(path):
    """{"size": bytes, "chunks": {index: digest}} of the chunks of ``path`` that hold
    data; a missing file is an empty one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return {"size": 0, "chunks": {}}
    try:
        size = os.fstat(fd).st_size
        return {"size": size, "chunks": {str(i): _digest(_read_chunk(fd, i, size))
                                         for i in _data_chunks(fd, size)}}
    finally:
        os.close(fd)


def send(path, theirs, out, result=None):
    """Write to ``out`` (a binary file) what turns the target's copy (``theirs``, its
    ``digests``) into ``path``; return the bytes of data sent.

    ``result``, a dict, is filled with the ``digests`` of the target's copy once it
    has applied the stream (those of what was read here): the next ``send`` may take
    them as ``theirs`` instead of asking the target to hash its copy again.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    sent = 0
    try:
        size = os.fstat(fd).st_size
        out.write(_SIZE.pack(size))
        held = theirs.get("chunks", {})
        mine = {}
        for index in _data_chunks(fd, size):
            data = _read_chunk(fd, index, size)
            mine[index] = _digest(data)
            if held.get(str(index)) != mine[index]:
                out.write(_FRAME.pack(index, len(data)))
                out.write(data)
                sent += len(data)
        for index in sorted(int(i) for i in held):
            if index not in mine and index * CHUNK < size:
                out.write(_FRAME.pack(index, 0))  # data there, a hole here
        out.write(_FRAME.pack(END, 0))
        out.flush()
    finally:
        os.close(fd)
    if result is not None:
        result.update(size=size, chunks={str(i): digest for i, digest in mine.items()})
    return sent


def receive(path, stream):
    """Apply a stream from ``send`` to ``path`` (made if missing, root's, 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        (size,) = _SIZE.unpack(exactly(stream, _SIZE.size))
        if size > MAX_SIZE:
            raise ValueError(f"an image of {size} bytes is not taken")
        os.ftruncate(fd, size)
        while True:
            index, length = _FRAME.unpack(exactly(stream, _FRAME.size))
            if index == END:
                break
            offset = index * CHUNK
            if offset >= size or length > min(CHUNK, size - offset):
                raise ValueError(f"chunk {index} ({length} bytes) is outside the image")
            if length:
                os.pwrite(fd, exactly(stream, length), offset)
            else:
                _zero(fd, offset, min(CHUNK, size - offset))
        os.fsync(fd)
    finally:
        os.close(fd)


def _data_chunks(fd, size):
    """Indexes of the chunks with data, in order."""
    chunks = []
    for start, end in data_ranges(fd, size):
        first, last = start // CHUNK, (end - 1) // CHUNK
        chunks.extend(i for i in range(first, last + 1) if not chunks or i > chunks[-1])
    return chunks


def _read_chunk(fd, index, size):
    length = min(CHUNK, size - index * CHUNK)
    return os.pread(fd, length, index * CHUNK)


def _digest(data):
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _zero(fd, offset, length):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.fallocate(fd, _FALLOC_PUNCH, ctypes.c_long(offset), ctypes.c_long(length)) != 0:
        os.pwrite(fd, bytes(length), offset)  # a filesystem without holes


def exactly(stream, count):
    """``count`` bytes of ``stream``; ValueError if it ends before."""
    data = bytearray()
    while len(data) < count:
        chunk = stream.read(count - len(data))
        if not chunk:
            raise ValueError("the stream ended early")
        data += chunk
    return bytes(data)
