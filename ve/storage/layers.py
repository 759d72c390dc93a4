"""Shared template layers: one read-only copy of a template's files for all its VEs.

A VE made with ``shared_template`` has no copy of its template on its disk
image. Its root (``Layout.private``, where every other VE has its image's
tree) is an overlay: the template's layer below, the VE's own image above.
Every such VE of the node reads the same layer files, so the kernel keeps one
page cache of them (systemd, libc, sshd...) instead of one per VE.

The layer (``VE_ROOT/layers/<id>``) is extracted once per template version
with the template's own owners; an unprivileged VE sees it through a mount
idmapped to its uid range (kernel/idmap.py), so nothing is chowned per VE.
Its id is ``<template>-<16 hex digits of the tarball's sha256>``: the same on
every node with the same template tarball, and a rebuilt template is a new
layer, so no VE's view changes under it.

The VE's image (mounted at ``Layout.upper``) holds::

    current -> g<hex>     the generation that is the VE's root; a reinstall makes
                          a new one and turns this link (one rename: a crash
                          leaves the old root or the new, never a mix)
    g<hex>/layer          the id of the layer below it
    g<hex>/root/          the VE's own files: all it changed, added or deleted
    g<hex>/work/          overlayfs's work directory

Why this is safe and keeps the plan's promises:

- overlayfs never writes to a lower layer: a VE's change to a template file
  copies it up into that VE's image; every other VE still sees the template's.
- The layer is reachable by host root only (VE_ROOT is 0700); the image's top
  level is not in the VE's view; overlayfs's own marks (trusted.overlay.*
  xattrs) need CAP_SYS_ADMIN on the host, so VE root can neither read nor
  forge them.
- The disk quota is the image: it holds only the VE's own files, and ``df``
  inside shows the image (overlayfs reports its upper filesystem). The
  template's files are the node's, not counted against the plan's disk.
"""

import contextlib
import hashlib
import json
import os
import re
import secrets
import stat

from .. import validate
from ..errors import InvalidConfig, ResourceError, VEError
from ..fsutil import atomic_write, remove_tree, walk_tree
from ..kernel import idmap, libc
from ..kernel.libc import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY

CURRENT = "current"
_GENERATION = re.compile(r"g[0-9a-f]{16}")
_LAYER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}-[0-9a-f]{16}")
_BUILDING = ".build-"
_OPAQUE = "trusted.overlay.opaque"  # overlayfs: nothing of the layers below shows through
# redirect_dir: a directory of the template can be renamed (not only copied).
# xino: every file of the view has the view's st_dev (else the layer's files look
# like another filesystem, and `du -x`, `find -xdev` or a backup skip them).
# No metacopy (a metadata-only copy-up trusts more of the upper layer) and no
# index (hard links across layers are copied up separately, as plain overlays do).
_COMMON_OPTIONS = "index=off,metacopy=off,xino=on"
OVERLAY_OPTIONS = f"redirect_dir=on,{_COMMON_OPTIONS}"


# -- the node's layers ---------------------------------------------------------


def layer_for(layout, template, tarball):
    """The id of template ``template``'s layer for its tarball ``tarball``; the
    layer is extracted first if this node does not have it yet."""
    template = validate.template_name(template)
    layer_id = _known_id(layout, template, tarball) or _identify(layout, template, tarball)
    if not layout.layer(layer_id).is_dir():
        _extract(layout, layer_id, tarball)
    return layer_id


def check_id(layer_id):
    """``layer_id`` if it can name a layer (a template name, '-', 16 hex digits)."""
    text = str(layer_id)
    if not _LAYER_ID.fullmatch(text) or ".." in text:
        raise InvalidConfig(f"bad layer id {layer_id!r}")
    return text


def find(layout, layer_id):
    """Where layer ``layer_id`` is on this node, or None: the node's own (extracted
    here from a template tarball of that hash), else one received with a VE moved
    here (used only by VEs that name it; the node's own creates never take it)."""
    for path in (layout.layer(layer_id), received(layout, layer_id)):
        if path.is_dir():
            return path
    return None


def received(layout, layer_id):
    """Where a layer sent by another node with a VE is kept, apart from the node's own."""
    return layout.layer_dir / "received" / layer_id


def from_own_template(layout, layer_id):
    """Extract layer ``layer_id`` from this node's template of that name if its
    tarball is the one the id names; return whether the node has its own now."""
    from . import templates
    template = layer_id.rsplit("-", 1)[0]
    try:
        tarball = templates.cache_path(layout.cache_dir, template)
    except VEError:
        return False
    if (_known_id(layout, template, tarball) or _identify(layout, template, tarball)) \
            != layer_id:
        return False  # another version of that template here
    return layer_for(layout, template, tarball) == layer_id


def _source_record(layout, template):
    return layout.layer_dir / f"{template}.source"


def _stamp(tarball):
    st = os.stat(tarball)
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _known_id(layout, template, tarball):
    """The id found for the same tarball file before (hashing it takes a while)."""
    try:
        with open(_source_record(layout, template)) as f:
            record = json.load(f)
        if record["stamp"] == _stamp(tarball) and _LAYER_ID.fullmatch(record["id"]):
            return record["id"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _identify(layout, template, tarball):
    stamp = _stamp(tarball)
    digest = hashlib.sha256()
    with open(tarball, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    layer_id = f"{template}-{digest.hexdigest()[:16]}"
    atomic_write(_source_record(layout, template),
                 json.dumps({"stamp": stamp, "id": layer_id}) + "\n", durable=False)
    return layer_id


def _extract(layout, layer_id, tarball):
    """Unpack the layer beside its place, then rename it in: a layer that exists is
    complete. Two creates racing both extract; the second's copy is dropped."""
    from .unpack import unpack
    building = layout.layer_dir / f"{_BUILDING}{secrets.token_hex(8)}"
    try:
        unpack(tarball, building, 0)
        os.rename(building, layout.layer(layer_id))
    except OSError as exc:
        if not layout.layer(layer_id).is_dir():
            raise ResourceError(f"cannot extract the template's shared layer: {exc}") from exc
    finally:
        if building.exists():
            remove_tree(building)


# -- a VE's image ----------------------------------------------------------------


def start_generation(upper, layer_root, layer_id, owner, keep_as=None):
    """Make a new, empty generation on the image mounted at ``upper`` over layer
    ``layer_id`` (at ``layer_root``), make it current and drop the older ones.

    The new root directory looks like the layer's (mode) and belongs to VE root
    (host uid ``owner``): the VE sees the template's tree, untouched. ``keep_as``:
    the old generation's files (all the VE had made or changed) become directory
    /<keep_as> of the new root (VE root's, mode 0700) instead of being dropped.
    """
    old = current(upper)[0] if keep_as is not None else None
    os.chmod(upper, 0o700)  # the image's top level is the host's, never the VE's
    generation = f"g{secrets.token_hex(8)}"
    folder = os.path.join(upper, generation)
    os.mkdir(folder, 0o700)
    atomic_write(os.path.join(folder, "layer"), layer_id + "\n")
    root = os.path.join(folder, "root")
    os.mkdir(root)
    os.chmod(root, os.stat(layer_root).st_mode & 0o7777)
    os.chown(root, owner, owner)
    os.mkdir(os.path.join(folder, "work"), 0o700)
    link = os.path.join(upper, f".{CURRENT}-{generation}")
    os.symlink(generation, link)
    os.rename(link, os.path.join(upper, CURRENT))  # the switch
    if old is not None:
        # After the switch: a crash before this rename leaves the old files on the
        # image (found by the next reinstall's drop), never a VE without a root.
        kept = os.path.join(root, keep_as)
        with _parts(upper, old, "root"):  # a real directory, not a link out
            os.rename(os.path.join(upper, old, "root"), kept)
        os.chmod(kept, 0o700)
        strip_overlay_marks(kept)
    drop_old_generations(upper)
    return generation


def hide_layer(root, layer_root):
    """Make generation root ``root``, filled with a whole tree from elsewhere (a
    backup), show exactly that tree: nothing of the layer at ``layer_root`` shows
    through. Its top-level directories become opaque and a top-level entry of the
    layer it lacks gets a whiteout (overlayfs ignores an opaque mark on the root
    itself, and below an opaque directory nothing of the layer is looked at)."""
    for name in os.listdir(layer_root):
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))  # a whiteout
            continue
        if stat.S_ISDIR(st.st_mode):
            os.setxattr(path, _OPAQUE, b"y", follow_symlinks=False)


def strip_overlay_marks(tree):
    """Make an old upper tree plain files: drop its whiteouts and overlayfs's
    xattrs. Left in place under a new root they would mean something there: a
    copied-up file's origin mark makes overlayfs take it for the template's file
    of that name (one inode, so /etc/passwd would show the kept copy). The tree
    is the VE's: ``walk_tree`` follows no link and has no depth limit."""
    _strip_marks(tree)
    for dir_fd, name, info in walk_tree(tree):
        if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
            os.unlink(name, dir_fd=dir_fd)  # a whiteout: it hid a template file
        else:  # xattr calls take no dir_fd: through /proc, the last part not followed
            _strip_marks(f"/proc/self/fd/{dir_fd}/{name}")


def _strip_marks(path):
    for attribute in os.listxattr(path, follow_symlinks=False):
        if attribute.startswith("trusted.overlay."):
            os.removexattr(path, attribute, follow_symlinks=False)


def drop_old_generations(upper):
    """Remove every generation but the current one (and a half-made switch)."""
    keep = current(upper)[0]
    for name in os.listdir(upper):
        if name != keep and (_GENERATION.fullmatch(name) or name.startswith(f".{CURRENT}-")):
            remove_tree(os.path.join(upper, name))


def current(upper):
    """(generation, layer id) of the image mounted at ``upper``; InvalidConfig if
    it is not a shared-template VE's image."""
    try:
        generation = os.readlink(os.path.join(upper, CURRENT))
    except OSError as exc:
        raise InvalidConfig(f"the VE's image has no shared-template root: {exc}") from exc
    if not _GENERATION.fullmatch(generation):
        raise InvalidConfig(f"the VE's image names a bad root {generation[:40]!r}")
    # An image may come from another node: nothing in it is followed out of it.
    try:
        with _parts(upper, generation) as (folder,):
            fd = os.open("layer", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
            with open(fd) as f:
                layer_id = f.read(128).strip()
    except OSError as exc:
        raise InvalidConfig(f"the VE's image has a bad root {generation}: {exc}") from exc
    if not _LAYER_ID.fullmatch(layer_id):
        raise InvalidConfig(f"the VE's image names a bad template layer in {generation}")
    return generation, layer_id


@contextlib.contextmanager
def _parts(upper, generation, *names):
    """Descriptors of directory ``generation`` of ``upper`` and of its ``names``, each
    opened without following a symlink (a mount may name them as /proc/self/fd/N)."""
    opened = []
    try:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        opened.append(os.open(os.path.join(upper, generation), flags))
        for name in names:
            opened.append(os.open(name, flags, dir_fd=opened[0]))
        yield opened[1:] if names else opened
    finally:
        for fd in opened:
            os.close(fd)


def mount_view(layout, veid, idmap_base, idmap_size):
    """Mount the VE's root view (its layer under its image's current generation) at
    ``Layout.private``; the image must be mounted at ``Layout.upper``."""
    upper, private = layout.upper(veid), layout.private(veid)
    if os.path.ismount(private):
        return
    generation, layer_id = current(upper)
    with _parts(upper, generation, "root", "work") as (root, work), \
            _lower(layout, veid, layer_id, idmap_base, idmap_size) as lowerdir:
        # No device node of the VE works on the host either (the VE's own root is
        # nodev too); a privileged VE's may, as on its image.
        libc.mount("overlay", str(private), "overlay", MS_NODEV if idmap_base else 0,
                   f"lowerdir={lowerdir},upperdir=/proc/self/fd/{root},"
                   f"workdir=/proc/self/fd/{work},{OVERLAY_OPTIONS}")


@contextlib.contextmanager
def readonly_view(layout, veid, upper, where, idmap_base, idmap_size):
    """The root view of a copy of VE ``veid``'s image mounted at ``upper``, mounted
    read-only at ``where`` for the body: the whole tree the VE sees (a backup of it
    needs nothing else to be restored, anywhere)."""
    generation, layer_id = current(upper)
    with _parts(upper, generation, "root") as (root,), \
            _lower(layout, veid, layer_id, idmap_base, idmap_size) as lowerdir:
        libc.mount("overlay", str(where), "overlay",
                   MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                   f"lowerdir=/proc/self/fd/{root}:{lowerdir},redirect_dir=follow,"
                   f"{_COMMON_OPTIONS}")
    try:
        yield where
    finally:
        libc.umount2(str(where))


@contextlib.contextmanager
def _lower(layout, veid, layer_id, idmap_base, idmap_size):
    """The path overlayfs takes the VE's layer from, idmapped to its uid range."""
    lower = find(layout, layer_id)
    if lower is None:
        raise ResourceError(f"the template layer {layer_id} the VE was made from is not on "
                            "this node", veid)
    if not idmap_base:
        yield _option_safe(str(lower), veid)
        return
    userns = idmap.user_namespace(idmap_base, idmap_size)
    try:
        tree = idmap.idmapped_tree(lower, userns)
    finally:
        os.close(userns)
    try:
        yield f"/proc/self/fd/{tree}"  # the mount takes its own reference
    finally:
        os.close(tree)


def _option_safe(path, veid):
    if set(path) & set(",:"):  # they would split overlayfs's options
        raise ResourceError(f"{path} has a ',' or ':' in it: not usable by overlayfs", veid)
    return path
