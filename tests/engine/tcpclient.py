"""A TCP connection from outside a VE that lives across a checkpoint or a move."""

import subprocess
import sys
import textwrap

CLIENT = """
import socket, sys, time
for _ in range(50):
    try:
        s = socket.create_connection(({ip!r}, {port}), timeout=5)
        break
    except OSError:
        time.sleep(0.1)
s.sendall(b"before\\n")
print("connected", flush=True)
sys.stdin.readline()
s.sendall(b"after\\n")
s.shutdown(socket.SHUT_WR)
print("rest", repr(s.recv(100)), flush=True)
"""


class HeldConnection:
    """A client in network namespace ``netns`` (a path) connected to ip:port: it sends
    "before" at once and "after" when ``finish`` is called, then reads to the end."""

    def __init__(self, netns, ip, port):
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={netns}", sys.executable, "-c",
             textwrap.dedent(CLIENT.format(ip=ip, port=port))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "connected"

    def finish(self):
        """Send the rest on the same connection; True if the peer then closed it cleanly
        (no reset: the connection survived)."""
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        rest = self.proc.stdout.readline()
        return self.proc.wait(30) == 0 and rest.startswith("rest")

    def close(self):
        self.proc.kill()
        self.proc.wait()
