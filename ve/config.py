"""The VE spec: frozen dataclasses and the ``conf/<veid>.conf`` file.

The file uses vzctl's ``KEY="value"`` lines so operators can read it, but it is
parsed here line by line and never sourced by a shell.
"""

import dataclasses
import re
from dataclasses import dataclass, field

from . import fsutil, validate
from .errors import InvalidConfig

IDMAP_SIZE = 65536


@dataclass(frozen=True)
class Limits:
    """Resource limits of one VE.

    ram and swap are bytes (swap may be 0); cpuunits is the relative CPU weight
    (OpenVZ scale, 1000 = normal); cpulimit is % of one CPU (0 = no limit);
    cpus is how many host CPUs the VE may run on (0 = all); numproc caps
    processes and threads. Memory and process limits are always set.
    """

    ram: int = 256 << 20
    swap: int = 0
    cpuunits: int = 1000
    cpulimit: int = 0
    cpus: int = 0
    numproc: int = 256

    def __post_init__(self):
        # Values are checked here so a Limits object is always valid.
        checks = {
            "ram": lambda v: validate.size(v, "ram"),
            "swap": lambda v: validate.size(v, "swap"),
            "cpuunits": lambda v: validate.integer(v, "cpuunits", 8, 500000),
            "cpulimit": lambda v: validate.integer(v, "cpulimit", 0, 100 * 1024),
            "cpus": lambda v: validate.integer(v, "cpus", 0, 1024),
            "numproc": lambda v: validate.integer(v, "numproc", 16, 4194304),
        }
        for name, check in checks.items():
            value = check(getattr(self, name))
            if value is None:
                raise InvalidConfig(f"bad {name}: a VE's {name} cannot be unlimited")
            object.__setattr__(self, name, value)
        if self.ram < 16 << 20:
            raise InvalidConfig(f"bad ram {validate.format_size(self.ram)}: the minimum is 16M")

    def replace(self, **changes):
        """Return a copy with ``changes`` applied (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class VEConfig:
    """Everything needed to (re)build a VE on any node."""

    veid: int
    hostname: str
    template: str
    limits: Limits = field(default_factory=Limits)
    privileged: bool = False

    def __post_init__(self):
        object.__setattr__(self, "veid", validate.veid(self.veid))
        object.__setattr__(self, "hostname", validate.hostname(self.hostname))
        object.__setattr__(self, "template", validate.template_name(self.template))
        if not isinstance(self.limits, Limits):
            raise InvalidConfig("limits must be a Limits object")

    @property
    def idmap_base(self):
        """First host uid/gid of this VE's range (0 for a privileged VE)."""
        return 0 if self.privileged else self.veid * IDMAP_SIZE

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


# conf file key -> (Limits field, is a size)
_LIMIT_KEYS = {
    "RAM": ("ram", True),
    "SWAP": ("swap", True),
    "CPUUNITS": ("cpuunits", False),
    "CPULIMIT": ("cpulimit", False),
    "CPUS": ("cpus", False),
    "NUMPROC": ("numproc", False),
}
_LINE = re.compile(r'^([A-Z_]+)="([^"\\$`]*)"$')


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
    return "\n".join(lines) + "\n"


def loads(text, source="config"):
    """Parse conf file text into a VEConfig; raise InvalidConfig on any bad line."""
    values = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise InvalidConfig(f"{source} line {number}: expected KEY=\"value\"")
        values[match.group(1)] = match.group(2)
    try:
        limits = Limits(**{name: values[key] for key, (name, _) in _LIMIT_KEYS.items() if key in values})
        return VEConfig(
            veid=values["VEID"],
            hostname=values["HOSTNAME"],
            template=values["OSTEMPLATE"],
            limits=limits,
            privileged=values.get("PRIVILEGED", "no") == "yes",
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
