#!/usr/bin/env python3
"""Web console keystroke-to-echo latency through the whole chain, as a browser has it.

Runs the whole product (tests/livestack.py: Redis, the node's root workers with
its console worker, gunicorn, the ASGI server) on throw-away state; the demo
customer orders a busybox VPS, signs in over HTTP (session cookie), asks for a
console ticket (``POST /api/v1/environments/<veid>/console/`` with the CSRF
token) and opens the console's WebSocket with the page's Origin, as the VPS
page does. After logging in at the VPS's getty, each sample types one printable
key and waits for its echo:

    WebSocket -> uvicorn (consumer) -> Redis list -> node console worker ->
    engine (watcher -> the VE's console -> the shell) -> back the same way

``bench/console.py`` measures the engine's part alone. The line is erased every
50 keys. Writes bench/results/console_web.json.

    .venv/bin/python bench/console_web.py [--samples 300]
"""

import argparse
import http.cookiejar
import json
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import RESULTS_DIR, log, percentile, require_root, write_json  # noqa: E402

PASSWORD = "bench-console-1"
KEYS = "abcdefghijklmnopqrstuvwxyz"


class Browser:
    """A signed-in browser session: cookies, CSRF token."""

    def __init__(self, base):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def cookie(self, name):
        return next((c.value for c in self.jar if c.name == name), "")

    def sign_in(self, username, password):
        page = self.opener.open(self.base + "/login/", timeout=30).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        body = urllib.parse.urlencode({"username": username, "password": password,
                                       "csrfmiddlewaretoken": token}).encode()
        self.opener.open(urllib.request.Request(self.base + "/login/", data=body), timeout=30)
        assert self.cookie("sessionid"), "not signed in"

    def ticket(self, veid):
        request = urllib.request.Request(
            f"{self.base}/api/v1/environments/{veid}/console/", data=b"{}", method="POST",
            headers={"X-CSRFToken": self.cookie("csrftoken"),
                     "Content-Type": "application/json", "Accept": "application/json"})
        return json.loads(self.opener.open(request, timeout=30).read())


class Console:
    """The console's WebSocket ``ws``, read into a buffer."""

    def __init__(self, ws):
        self.ws = ws
        self.seen = b""

    def send(self, text):
        self.ws.send(text.encode())

    def expect(self, wanted, timeout=10.0):
        """Read until ``wanted`` (bytes or a compiled pattern) shows; return when."""
        deadline = time.monotonic() + timeout
        while not (wanted.search(self.seen) if hasattr(wanted, "search") else wanted in self.seen):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{wanted!r} not seen; last output {self.seen[-300:]!r}")
            message = self.ws.recv(timeout=left)
            if isinstance(message, bytes):
                if b"\x1b[6n" in message:  # the shell asks where the cursor is: answer,
                    self.send("\x1b[1;1R")  # as the browser's terminal does
                self.seen += message
            elif json.loads(message).get("type") == "closed":
                raise RuntimeError(f"the console closed: {message}")
        return time.perf_counter()


def measure(console, samples):
    latencies = []
    for i in range(samples):
        if i and i % 50 == 0:
            console.send("\x15")  # Ctrl-U: erase the line
            time.sleep(0.05)
        key = KEYS[i % len(KEYS)]
        console.seen = b""
        began = time.perf_counter()
        console.send(key)
        latencies.append((console.expect(key.encode()) - began) * 1000)
    return latencies


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--output", default=str(RESULTS_DIR / "console_web.json"))
    args = parser.parse_args(argv)
    require_root()
    from tests.livestack import LiveStack, new_cgroup_top
    live = LiveStack(new_cgroup_top())
    results = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "config": vars(args)}
    try:
        live.start()
        customer = live.api("demo")
        op = customer.wait_operation(customer.post("/api/v1/environments/", {
            "plan": "VPS S", "template": "busybox", "hostname": "bench-console.example.com",
            "root_password": PASSWORD}), timeout=300)
        assert op["state"] == "succeeded", op
        browser = Browser(live.base)
        browser.sign_in("demo", live.credentials()["demo"])
        ticket = browser.ticket(op["veid"])
        from websockets.sync.client import connect
        with connect(ticket["url"] + "&rows=24&cols=80", origin=live.base, open_timeout=30,
                     additional_headers={"Cookie": f"sessionid={browser.cookie('sessionid')}"}
                     ) as ws:
            latencies = session(Console(ws), args.samples)
        results["figures"] = {
            "web: WebSocket -> ASGI -> Redis -> node relay -> engine -> shell and back": {
                "p50_ms": round(percentile(latencies, 50), 3),
                "p95_ms": round(percentile(latencies, 95), 3),
                "max_ms": round(max(latencies), 3), "n": len(latencies)}}
    finally:
        log("cleaning up")
        live.stop()
    for what, figures in results["figures"].items():
        print(f"{what}: p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms, "
              f"max {figures['max_ms']} ms ({figures['n']} keys)")
    write_json(args.output, results)
    return 0


def session(console, samples):
    """Log in at the getty (if it asks), then the samples' latencies (ms)."""
    prompt = re.compile(rb"# (\x1b\[6n)?$")  # ash asks where the cursor is after its prompt
    console.send("\r")
    console.expect(re.compile(rb"login: $|" + prompt.pattern), timeout=30)
    if console.seen.rstrip().endswith(b"login:"):
        console.send("root\r")
        console.expect(b"Password:")
        console.send(PASSWORD + "\r")
        console.expect(prompt, timeout=30)
    log(f"logged in; {samples} keys")
    return measure(console, samples)


if __name__ == "__main__":
    sys.exit(main())
