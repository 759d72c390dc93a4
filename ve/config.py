"""The VE spec: immutable records and the ``conf/<veid>.conf`` file.

The records are named tuples rather than dataclasses: importing dataclasses
and building the classes costs ~20 ms, the better part of a ``vectl`` call.
The file uses vzctl's ``KEY="value"`` lines so operators can read it, but it is
parsed here line by line and never sourced by a shell.
"""

from collections import namedtuple

from . import fsutil, validate
from .errors import InvalidConfig

IDMAP_SIZE = 65536
# Network devices a VE may have in its namespace, lo and eth0 included. 128 leaves
# room for a VE that runs docker (a bridge, and a veth per container) while a
# flood stops at ~7 MiB of kernel memory (~57 KiB a bridge), not hundreds.
DEFAULT_NUMNETIF = 128
MAX_NUMNETIF = 65536


_LIMIT_CHECKS = {
    "ram": lambda v: validate.size(v, "ram"),
    "swap": lambda v: validate.size(v, "swap"),
    "cpuunits": lambda v: validate.integer(v, "cpuunits", 8, 500000),
    "cpulimit": lambda v: validate.integer(v, "cpulimit", 0, 100 * 1024),
    "cpus": lambda v: validate.integer(v, "cpus", 0, 1024),
    "numproc": lambda v: validate.integer(v, "numproc", 16, 4194304),
    "rate": lambda v: validate.integer(v, "rate", 0, 30000),
    "diskspace": lambda v: validate.size(v, "diskspace"),
    "diskinodes": lambda v: validate.integer(v, "diskinodes", 1024, 2**32 - 1),
    "ioweight": lambda v: validate.integer(v, "ioweight", 0, 1000),
    "readbps": lambda v: validate.size(v, "readbps"),
    "writebps": lambda v: validate.size(v, "writebps"),
    "readiops": lambda v: validate.integer(v, "readiops", 0, 10**7),
    "writeiops": lambda v: validate.integer(v, "writeiops", 0, 10**7),
    "numconn": lambda v: validate.integer(v, "numconn", 0, 1 << 24),
    "numnetif": lambda v: validate.integer(v, "numnetif", 0, MAX_NUMNETIF),
}
MIN_DISKSPACE, MAX_DISKSPACE = 32 << 20, 64 << 40
INODE_BYTES = 4096  # ext4's inode tables must leave the disk room for data


class Limits(namedtuple("Limits", tuple(_LIMIT_CHECKS),
                        defaults=(256 << 20, 0, 1000, 0, 0, 256, 0, 2 << 30, 131072,
                                  0, 0, 0, 0, 0, 0, DEFAULT_NUMNETIF))):
    """Resource limits of one VE (immutable; values are checked on creation).

    ram and swap are bytes (swap may be 0); cpuunits is the relative CPU weight
    (OpenVZ scale, 1000 = normal); cpulimit is % of one CPU (0 = no limit);
    cpus is how many host CPUs the VE may run on (0 = all); numproc caps
    processes and threads; rate caps the VE's network traffic each way in
    Mbit/s (0 = no cap); diskspace (bytes) and diskinodes size the VE's disk;
    ioweight is its relative I/O weight (10..1000, 0 = the host's default),
    readbps/writebps (bytes/s) and readiops/writeiops cap its disk I/O
    (0 = no cap); numconn caps the host's connection-tracking entries of a
    routed VE, each way (0 = no cap, docs/networking.md); numnetif caps the
    network devices in the VE's own namespace, lo and eth0 included (0 = no
    cap; the node watcher enforces it, docs/security.md). Memory, process
    and disk limits are always set. Each field also accepts text such as
    "256M" or "50".
    """

    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        raw = super().__new__(cls, *args, **kwargs)
        values = []
        for (name, check), value in zip(_LIMIT_CHECKS.items(), raw):
            value = check(value)
            if value is None:
                raise InvalidConfig(f"bad {name}: a VE's {name} cannot be unlimited")
            values.append(value)
        if values[0] < 16 << 20:
            raise InvalidConfig(f"bad ram {validate.format_size(values[0])}: the minimum is 16M")
        if not MIN_DISKSPACE <= values[7] <= MAX_DISKSPACE:
            raise InvalidConfig(f"bad diskspace {validate.format_size(values[7])}: "
                                "use 32M to 64T")
        if values[8] > values[7] // INODE_BYTES:
            raise InvalidConfig(f"bad diskinodes {values[8]}: at most one per "
                                f"{INODE_BYTES} bytes of diskspace "
                                f"({values[7] // INODE_BYTES} for "
                                f"{validate.format_size(values[7])})")
        if 0 < values[9] < 10:
            raise InvalidConfig(f"bad ioweight {values[9]}: use 10 to 1000, or 0 for the default")
        return cls._make(values)  # _make skips __new__: the values are checked

    def replace(self, **changes):
        """Return a checked copy with ``changes`` applied (None values are ignored)."""
        return Limits(**{**self._asdict(), **{k: v for k, v in changes.items() if v is not None}})


ROUTED, BRIDGED = "routed", "bridged"


IMAGE, EXT4, XFS, DIRECTORY = "image", "ext4", "xfs", "dir"
LAYOUTS = (IMAGE, EXT4, XFS, DIRECTORY)


class VEConfig(namedtuple("VEConfig", "veid hostname template limits privileged "
                                      "ips nameservers netmode bridge layout onboot bootorder "
                                      "seccomp_allow shared_template",
                          defaults=(Limits(), False, (), (), ROUTED, "", IMAGE, False, 0, (),
                                    False))):
    """Everything needed to (re)build a VE on any node (immutable, checked).

    ``ips`` are the VE's addresses (IPv4 and IPv6, no prefix); ``netmode`` is
    "routed" (venet style, the default) or "bridged" (the host side of the
    VE's veth joins ``bridge``); ``nameservers`` go to its /etc/resolv.conf.
    ``layout`` is "ext4" or "xfs" (the private area is an image of that
    filesystem, which enforces the disk limits), "image" (either: ``create``
    picks the one this host can grow online, the default) or "dir" (a plain
    directory: usage is accounted, not enforced). ``onboot``: the node
    starts it when it boots (``vectl watch --onboot``), higher ``bootorder``
    first. ``seccomp_allow``: calls the VE's seccomp filter denies by default
    that this VE may make (staff only; names or groups of
    ``ve.syscalls.RELAXABLE``, kept as call names). ``shared_template``: the
    template's files are one read-only layer shared by every such VE of the node
    (their page cache too), under the VE's own writable image (ve/storage/layers.py).
    """

    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        raw = super().__new__(cls, *args, **kwargs)
        if not isinstance(raw.limits, Limits):
            raise InvalidConfig("limits must be a Limits object")
        ips = _unique(validate.ip_address(a) for a in raw.ips)
        nameservers = _unique(validate.ip_address(a, "nameserver") for a in raw.nameservers)
        if raw.netmode not in (ROUTED, BRIDGED):
            raise InvalidConfig(f"bad netmode {raw.netmode!r}: use routed or bridged")
        if raw.netmode == BRIDGED and not raw.bridge:
            raise InvalidConfig("bridged networking needs a bridge name")
        bridge = validate.ifname(raw.bridge, "bridge") if raw.bridge else ""
        if raw.layout not in LAYOUTS:
            raise InvalidConfig(f"bad layout {raw.layout!r}: use image, ext4, xfs or dir")
        shared = validate.yes_no(raw.shared_template, "shared_template")
        if shared and raw.layout == DIRECTORY:
            raise InvalidConfig("a shared template needs an image layout (its writable layer)")
        return cls._make((validate.veid(raw.veid), validate.hostname(raw.hostname),
                          validate.template_name(raw.template), raw.limits,
                          bool(raw.privileged), ips, nameservers, raw.netmode, bridge,
                          raw.layout, validate.yes_no(raw.onboot, "onboot"),
                          validate.integer(raw.bootorder, "bootorder", 0, 1000),
                          _seccomp_allow(raw.seccomp_allow), shared))

    @property
    def idmap_base(self):
        """First host uid/gid of this VE's range (0 for a privileged VE)."""
        return 0 if self.privileged else self.veid * IDMAP_SIZE

    def replace(self, **changes):
        """Return a checked copy with ``changes`` applied."""
        return VEConfig(**{**self._asdict(), **changes})


def _seccomp_allow(names):
    """Check calls or groups to relax; return call names (sorted), () for none."""
    if isinstance(names, str):
        names = names.replace(",", " ").split()
    names = tuple(names)
    if not names or names == ("none",):
        return ()
    from . import syscalls  # on use: most VEs relax nothing
    try:
        return syscalls.allow_names(names)
    except ValueError as exc:
        raise InvalidConfig(f"bad seccomp_allow: {exc}") from None


def _unique(values):
    """A tuple of ``values`` without repeats, in their first order."""
    return tuple(dict.fromkeys(values))


# conf file key -> (Limits field, is a size)
_LIMIT_KEYS = {
    "RAM": ("ram", True),
    "SWAP": ("swap", True),
    "CPUUNITS": ("cpuunits", False),
    "CPULIMIT": ("cpulimit", False),
    "CPUS": ("cpus", False),
    "NUMPROC": ("numproc", False),
    "RATE": ("rate", False),
    "DISKSPACE": ("diskspace", True),
    "DISKINODES": ("diskinodes", False),
    "IOWEIGHT": ("ioweight", False),
    "READBPS": ("readbps", True),
    "WRITEBPS": ("writebps", True),
    "READIOPS": ("readiops", False),
    "WRITEIOPS": ("writeiops", False),
    "NUMCONN": ("numconn", False),
    "NUMNETIF": ("numnetif", False),
}
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_UNSAFE_VALUE_CHARS = frozenset('"\\$`')


def _parse_line(line):
    """Split ``KEY="value"`` into (key, value), or return None if malformed."""
    key, sep, quoted = line.partition("=")
    value = quoted[1:-1]
    if (sep and key and set(key) <= _KEY_CHARS and len(quoted) >= 2
            and quoted[0] == quoted[-1] == '"' and not set(value) & _UNSAFE_VALUE_CHARS):
        return key, value
    return None


def dumps(config):
    """Render a VEConfig as conf file text."""
    lines = [
        "# Written by vectl; edit with `vectl set`.",
        f'VEID="{config.veid}"',
        f'HOSTNAME="{config.hostname}"',
        f'OSTEMPLATE="{config.template}"',
        f'PRIVILEGED="{"yes" if config.privileged else "no"}"',
    ]
    for key, (name, is_size) in _LIMIT_KEYS.items():
        value = getattr(config.limits, name)
        lines.append(f'{key}="{validate.format_size(value) if is_size else value}"')
    lines += [f'IP_ADDRESS="{" ".join(config.ips)}"',
              f'NAMESERVER="{" ".join(config.nameservers)}"',
              f'NETMODE="{config.netmode}"', f'BRIDGE="{config.bridge}"',
              f'LAYOUT="{config.layout}"',
              f'ONBOOT="{"yes" if config.onboot else "no"}"',
              f'BOOTORDER="{config.bootorder}"',
              f'SECCOMP_ALLOW="{" ".join(config.seccomp_allow)}"',
              f'SHARED_TEMPLATE="{"yes" if config.shared_template else "no"}"']
    return "\n".join(lines) + "\n"


def loads(text, source="config"):
    """Parse conf file text into a VEConfig; raise InvalidConfig on any bad line."""
    values = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parsed = _parse_line(line)
        if parsed is None:
            raise InvalidConfig(f"{source} line {number}: expected KEY=\"value\"")
        values[parsed[0]] = parsed[1]
    try:
        limits = Limits(**{name: values[key]
                           for key, (name, _) in _LIMIT_KEYS.items() if key in values})
        return VEConfig(
            veid=values["VEID"],
            hostname=values["HOSTNAME"],
            template=values["OSTEMPLATE"],
            limits=limits,
            privileged=values.get("PRIVILEGED", "no") == "yes",
            ips=tuple(values.get("IP_ADDRESS", "").split()),
            nameservers=tuple(values.get("NAMESERVER", "").split()),
            netmode=values.get("NETMODE", ROUTED),
            bridge=values.get("BRIDGE", ""),
            layout=values.get("LAYOUT", DIRECTORY),  # VEs from before images were directories
            onboot=values.get("ONBOOT", "no"),
            bootorder=values.get("BOOTORDER", "0"),
            seccomp_allow=values.get("SECCOMP_ALLOW", ""),
            shared_template=values.get("SHARED_TEMPLATE", "no"),
        )
    except KeyError as exc:
        raise InvalidConfig(f"{source}: missing {exc.args[0]}") from None


def read(path):
    """Read a conf file."""
    with open(path, encoding="utf-8") as handle:
        return loads(handle.read(), source=str(path))


def write(path, config):
    """Write a conf file atomically (a reader sees the old or the new file)."""
    fsutil.atomic_write(path, dumps(config))
