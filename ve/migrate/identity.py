"""A node's migration identity: its SSH keys, the nodes it trusts, its sshd.

Everything lives in VE_ROOT/migrate (root's, 0700):

    id_ed25519[.pub]         this node's key, for pushing VEs to other nodes
    ssh_host_ed25519_key     the host key of this node's migration sshd
    authorized_keys          nodes that may push VEs here: each key is bound to
                             the receiver (restrict, command=...), never a shell
    known_hosts              the migration sshds of other nodes, by address
    sshd_config              written at each `serve`

A stolen node key lets its holder push VEs to the nodes that trust it, and
nothing else: the receiver (``receive.py``) takes rsync into its incoming
directory and a few verbs on those VEs only.
"""

import os
import shlex
import subprocess
import sys
from pathlib import Path

from ..errors import InvalidConfig
from ..fsutil import atomic_write

KEY, HOST_KEY = "id_ed25519", "ssh_host_ed25519_key"
SSHD = "/usr/sbin/sshd"


def directory(layout):
    path = Path(layout.root) / "migrate"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def ensure_keys(layout):
    """Make this node's key pair and host key once; return (public key, host public key)."""
    here = directory(layout)
    for name in (KEY, HOST_KEY):
        if not (here / name).exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                            f"ve-migrate@{os.uname().nodename}", "-f", str(here / name)],
                           check=True, stdin=subprocess.DEVNULL)
    return (_public(here / f"{KEY}.pub"), _public(here / f"{HOST_KEY}.pub"))


def allow(layout, public_key, command):
    """Let the holder of ``public_key`` (another node) push VEs here through ``command``."""
    key = checked_key(public_key)
    path = directory(layout) / "authorized_keys"
    lines = _lines(path)
    entry = f'restrict,command="{command}" {key}'
    lines = [line for line in lines if not line.endswith(key)] + [entry]
    atomic_write(path, "\n".join(lines) + "\n")


def trust_only(layout, public_keys, command):
    """Make the nodes holding ``public_keys`` exactly those that may push VEs here (a
    node the dashboard dropped loses its access). Return True if anything changed."""
    keys = sorted({checked_key(key) for key in public_keys})
    text = "".join(f'restrict,command="{command}" {key}\n' for key in keys)
    return _write_if_changed(directory(layout) / "authorized_keys", text)


def know_only(layout, host_keys):
    """Make ``host_keys`` ({"host:port": host key}) exactly the migration sshds this node
    knows. Return True if anything changed."""
    lines = []
    for address, key in sorted(host_keys.items()):
        host, port = split_address(address)
        lines.append(f"[{host}]:{port} {checked_key(key)}\n")
    return _write_if_changed(directory(layout) / "known_hosts", "".join(lines))


def _write_if_changed(path, text):
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    atomic_write(path, text)
    return True


def know_host(layout, address, host_key):
    """Record ``host_key`` as the migration sshd at ``address`` (host:port)."""
    host, port = split_address(address)
    key = checked_key(host_key)
    path = directory(layout) / "known_hosts"
    name = f"[{host}]:{port}"
    lines = [line for line in _lines(path) if not line.startswith(name + " ")]
    atomic_write(path, "\n".join(lines + [f"{name} {key}"]) + "\n")


def ssh_command(layout, address):
    """The ssh argv (for rsync's -e too) that reaches the migration sshd at ``address``
    with this node's key, checking its host key strictly."""
    host, port = split_address(address)
    here = directory(layout)
    return ["ssh", "-p", str(port), "-i", str(here / KEY), "-l", "root", *_cipher_options(),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={here / 'known_hosts'}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
            "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3", "-o", "ControlMaster=no", host]


def _cipher_options():
    """AES-GCM first where the CPU has AES instructions: there it costs each end about
    half the CPU of ssh's default ChaCha20-Poly1305, and a live move's checkpoint goes
    through ssh while the VE is frozen. Elsewhere ssh's own order stands."""
    try:
        with open("/proc/cpuinfo") as f:
            aes = any(line.startswith("flags") and " aes " in f" {line.split(':', 1)[-1]} "
                      for line in f)
    except OSError:
        aes = False
    return ["-o", "Ciphers=^aes128-gcm@openssh.com"] if aes else []


def sshd_argv(layout, listen):
    """The argv of this node's migration sshd on ``listen`` (host:port), in the foreground."""
    host, port = split_address(listen)
    here = directory(layout)
    config = "\n".join([
        f"ListenAddress {host}:{port}" if ":" not in host else f"ListenAddress [{host}]:{port}",
        f"HostKey {here / HOST_KEY}",
        f"AuthorizedKeysFile {here / 'authorized_keys'}",
        f"PidFile {here / 'sshd.pid'}",
        "AllowUsers root", "PermitRootLogin forced-commands-only",
        "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "PermitUserEnvironment no",
        "AllowTcpForwarding no", "AllowStreamLocalForwarding no", "X11Forwarding no",
        "AllowAgentForwarding no", "PermitTunnel no", "PrintMotd no",
        "MaxStartups 32:50:64", "LogLevel INFO",
        # A source that vanished (a network cut) is given up after ~15 s, as the
        # source gives up on us: else its receiver waits for it forever.
        "ClientAliveInterval 5", "ClientAliveCountMax 3",
        # Its files are in VE_ROOT/migrate, root's and 0700 (``directory`` makes it so
        # each time); StrictModes would also refuse a VE_ROOT below a sticky /tmp.
        "StrictModes no", ""])
    atomic_write(here / "sshd_config", config)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege-separation directory
    return [SSHD, "-D", "-e", "-f", str(here / "sshd_config")]


# The engine settings of a node that its receiver needs too (sshd gives the commands
# it runs an environment of its own): taken from whoever runs `vectl migration allow`.
NODE_ENV = ("VE_NET_UPLINK", "VE_CRIU", "VE_LXCFS", "VE_WATCH")


def receiver_command(layout, cgroup_parent):
    """The forced command of the keys this node trusts: the receiver, for this node."""
    package = Path(__file__).resolve().parents[2]
    settings = [f"{name}={os.environ[name]}" for name in NODE_ENV if os.environ.get(name)]
    command = " ".join(shlex.quote(part) for part in [
        "env", f"PYTHONPATH={package}", f"VE_ROOT={layout.root}",
        f"VE_CGROUP_PARENT={cgroup_parent}", *settings, sys.executable, "-s", "-m",
        "ve.cli", "migration", "receive"])
    if '"' in command or "\n" in command:
        raise InvalidConfig("a node setting holds a quote or a line break")
    return command


def split_address(address):
    """("host", port) of "host:port" or "[v6]:port"; InvalidConfig if it is not one."""
    host, sep, port = str(address).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or \
            any(c in host for c in " \t\n'\"\\/@"):
        raise InvalidConfig(f"bad node address {address!r}: use host:port")
    return host, int(port)


def checked_key(text):
    """"ssh-ed25519 BASE64" of an ed25519 public key line; InvalidConfig if it is not one."""
    parts = str(text).strip().split()
    if len(parts) < 2 or parts[0] != "ssh-ed25519" or not parts[1].isascii() or \
            not parts[1].replace("+", "").replace("/", "").replace("=", "").isalnum():
        raise InvalidConfig("not an ssh-ed25519 public key")
    return f"{parts[0]} {parts[1]}"


def _public(path):
    return " ".join(path.read_text().split()[:2])


def _lines(path):
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []
