#!/usr/bin/env python3
"""Click Reboot to the page showing Running, in Chromium, pushed and polled side by side.

Runs the whole product (tests/livestack.py: Redis, the node's root workers,
gunicorn, the ASGI server) on throw-away state; the demo customer orders a
busybox VPS and reboots it from its page, alternately with the page's push socket
(``/ws/live/<veid>/``, hosting/operations/live_socket.py) and without it (the
page's fallback: a poll every 1.5 s), ``--runs`` times each. Per reboot:

- click -> shown: the browser's clock from the click to the moment the page
  shows the VPS Running with this reboot succeeded (a MutationObserver);
- engine: the operation's own time on the node (started -> finished);
- finished -> shown: from the node recording the end to the page showing it
  (the browser's and the server's clocks are the same machine's).

Writes bench/results/live_push.json.

    .venv/bin/python bench/live_push.py [--runs 10]
"""

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import RESULTS_DIR, log, percentile, require_root, write_json  # noqa: E402

PASSWORD = "bench-push-1"
CHROMIUM = "/usr/bin/chromium"
# Installed after each load: notes when the page shows Running with one more succeeded
# reboot than it had when the watch began.
WATCH = """(before) => {
  window.__shownAt = null;
  const done = () => document.querySelectorAll(
      "#operations tr[data-kind=restart][data-state=succeeded]").length > before &&
      /Running/.test((document.querySelector("#ve-state") || {}).textContent || "");
  const look = () => { if (window.__shownAt === null && done()) window.__shownAt = Date.now(); };
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true,
                                                     characterData: true});
  look();
}"""
NO_SOCKET = "window.WebSocket = undefined;"  # the page's fallback: polling


def reboot(page, base, veid, api):
    """One reboot from the page; (click->shown, engine, finished->shown) in ms."""
    page.reload()  # what the other page's reboot changed, as a customer would see it now
    if page.evaluate("typeof window.WebSocket") == "function":
        page.locator("#live[data-live=open]").wait_for()
    before = page.locator("#operations tr[data-kind=restart][data-state=succeeded]").count()
    clicked = page.evaluate("Date.now()")
    page.click("#btn-reboot")
    page.wait_for_load_state()  # the form's POST, redirected back to the page
    page.evaluate(WATCH, before)
    # Asked from here (the page's CSP forbids a string evaluated in it); the moment itself
    # is the observer's, so how often it is asked does not change the figure.
    deadline = time.monotonic() + 60
    while (shown := page.evaluate("window.__shownAt")) is None:
        assert time.monotonic() < deadline, "the page never showed the reboot done"
        time.sleep(0.05)
    op = api.get(f"/api/v1/operations/?environment__veid={veid}&kind=restart")["results"][0]
    started, finished = (datetime.fromisoformat(op[k]).timestamp() * 1000
                         for k in ("started", "finished"))
    return shown - clicked, finished - started, shown - finished


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--output", default=str(RESULTS_DIR / "live_push.json"))
    args = parser.parse_args(argv)
    require_root()
    from playwright.sync_api import sync_playwright

    from tests.livestack import LiveStack, new_cgroup_top
    live = LiveStack(new_cgroup_top())
    results = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "config": vars(args)}
    samples = {"push": [], "poll": []}
    try:
        live.start()
        customer = live.api("demo")
        op = customer.wait_operation(customer.post("/api/v1/environments/", {
            "plan": "VPS S", "template": "busybox", "hostname": "bench-push.example.com",
            "root_password": PASSWORD}), timeout=300)
        assert op["state"] == "succeeded", op
        veid = op["veid"]
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            pages = {how: _signed_in_page(chromium, live, veid, how) for how in samples}
            pages["push"].locator("#live[data-live=open]").wait_for()
            for run in range(args.runs):
                for how, page in pages.items():  # alternately: the same load for both
                    samples[how].append(reboot(page, live.base, veid, customer))
                    log(f"run {run + 1} {how}: click->shown {samples[how][-1][0]:.0f} ms")
            chromium.close()
    finally:
        log("cleaning up")
        live.stop()
    results["figures"] = {how: _figures(rows) for how, rows in samples.items()}
    for how, figures in results["figures"].items():
        print(f"{how}: " + ", ".join(f"{name} p50 {f['p50_ms']} ms (p95 {f['p95_ms']})"
                                     for name, f in figures.items()))
    push, poll = (results["figures"][how]["finished_to_shown"]["p50_ms"]
                  for how in ("push", "poll"))
    results["poll_over_push_p50"] = round(poll / push, 2) if push else None
    write_json(args.output, results)
    return 0


def _signed_in_page(chromium, live, veid, how):
    context = chromium.new_context()
    if how == "poll":
        context.add_init_script(NO_SOCKET)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(live.base + "/login/")
    page.fill("input[name=username]", "demo")
    page.fill("input[name=password]", live.credentials()["demo"])
    page.click("button[type=submit]")
    page.wait_for_load_state()
    page.goto(f"{live.base}/vps/{veid}/")
    return page


def _figures(rows):
    names = ("click_to_shown", "engine", "finished_to_shown")
    return {name: {"p50_ms": round(percentile([r[i] for r in rows], 50), 1),
                   "p95_ms": round(percentile([r[i] for r in rows], 95), 1), "n": len(rows)}
            for i, name in enumerate(names)}


if __name__ == "__main__":
    sys.exit(main())
