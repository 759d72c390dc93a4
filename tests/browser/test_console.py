"""A customer opens their VPS's console in the browser, logs in at its getty, types
``hostname`` and sees the VPS's host name; the terminal follows the window's size;
copy and paste work; suspending the customer closes the open console at once. Real
Chromium against the whole product: the web page, the ASGI server's WebSocket, the
node's console worker and the engine's console of a running busybox VE, then of Debian
VEs at systemd's console-getty.

Screenshots land in test-artifacts/browser/ (console-*.png).
"""

import json
import os
import shutil

import pytest

from tests.browser import test_portal as portal
from tests.browser.test_portal import shot, sign_in, wait_for
from tests.conftest import DEBIAN_TEMPLATES

browser = portal.browser  # the same Chromium fixture

HOSTNAME = "console.example.com"
ROOT_PASSWORD = "console-pass-1"


def screen(page):
    """The terminal's rows as text (xterm.js draws each row as an element)."""
    return [row.rstrip() for row in page.locator("#console-screen .xterm-rows > div")
            .all_inner_texts()]


def wait_screen(page, predicate, what, timeout=30):
    """The screen's rows once ``predicate(rows)`` holds."""
    found = []

    def check():
        rows = screen(page)
        if predicate(rows):
            found.append(rows)
            return True
        return False
    try:
        wait_for(check, timeout, what)
    except AssertionError:
        shot(page, "console-failed")
        raise AssertionError(f"timed out waiting for {what}; the screen: {screen(page)}") \
            from None
    return found[0]


def type_line(page, text):
    page.locator("#console-screen .xterm-helper-textarea").focus()
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def log_in(page):
    """Answer the getty's login prompt with root and the VPS's password."""
    type_line(page, "root")
    wait_screen(page, lambda rows: any(r.endswith("Password:") for r in rows), "Password:")
    type_line(page, ROOT_PASSWORD)
    # Not only the last row: systemd may still print boot lines below the prompt.
    wait_screen(page, lambda rows: any(r.endswith("#") for r in below(rows, "Password:")),
                "a root shell")


def below(rows, ending):
    """The rows below the last one that ends with ``ending`` (all if none does)."""
    last = max((i for i, r in enumerate(rows) if r.endswith(ending)), default=-1)
    return rows[last + 1:]


def log_in_if_asked(page):
    """The VE's getty asks for root and its password; a shell prompt needs nothing."""
    rows = wait_screen(page, lambda rows: any(r.endswith(("login:", "#")) for r in rows),
                       "a login prompt or a shell")
    if any(r.endswith("login:") for r in rows):
        log_in(page)


def create_vps(api, stack, template, hostname):
    """The demo customer's new VPS of ``template``, running; its VEID."""
    op = api.wait_operation(api.post("/api/v1/environments/", {
        "plan": "VPS S", "template": template, "hostname": hostname,
        "root_password": ROOT_PASSWORD}), timeout=180)
    assert op["state"] == "succeeded", (op, stack.logs("node-worker"))
    return op["veid"]


def open_console(page):
    """Open the VPS page's console and wait until it is connected."""
    page.click("#btn-console")
    page.locator("#console[data-state=open]").wait_for()
    page.locator("#console-status", has_text="Connected").wait_for()


def type_hostname(page, hostname):
    type_line(page, "hostname")
    wait_screen(page, lambda rows: hostname in rows, "the host name alone on a line")


def test_customer_opens_the_console_types_hostname_and_suspension_closes_it(browser,
                                                                           live_stack):
    api, staff = live_stack.api("demo"), live_stack.api("admin")
    veid = create_vps(api, live_stack, "busybox", HOSTNAME)
    customer = next(c for c in staff.get("/api/v1/customers/")["results"]
                    if c["username"] == "demo")

    page = sign_in(browser, live_stack, "demo")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                   origin=live_stack.base)
    page.goto(f"{live_stack.base}/vps/{veid}/")
    policy_errors = []
    page.on("console", lambda m: policy_errors.append(m.text)
            if "Content Security Policy" in m.text and "style" in m.text else None)
    open_console(page)
    type_line(page, "")  # wake a quiet getty
    shot(page, "console-01-open")
    log_in_if_asked(page)

    type_hostname(page, HOSTNAME)
    shot(page, "console-02-hostname")

    # The window shrinks: the terminal refits and the VE's tty gets the new size.
    rows_before = len(screen(page))
    page.set_viewport_size({"width": 900, "height": 600})
    wait_for(lambda: len(screen(page)) < rows_before, 10, "the terminal to refit")
    rows_now = len(screen(page))
    type_line(page, "stty size")
    wait_screen(page, lambda rows: any(r.startswith(f"{rows_now} ") and r.split()[-1].isdigit()
                                       for r in rows), f"stty size of {rows_now} rows")

    # Paste (the browser's paste event, as Ctrl+V or the menu makes it) and copy (select).
    page.evaluate("""text => {
        const data = new DataTransfer();
        data.setData("text/plain", text);
        document.querySelector("#console-screen .xterm-helper-textarea").dispatchEvent(
            new ClipboardEvent("paste", {clipboardData: data, bubbles: true, cancelable: true}));
    }""", "echo pasted-$((6*7))\r")
    wait_screen(page, lambda rows: "pasted-42" in rows, "the pasted command's output")
    row = page.locator("#console-screen .xterm-rows > div", has_text="pasted-42").last
    row.scroll_into_view_if_needed()
    text = row.locator("span", has_text="pasted-42").first.bounding_box()
    y = text["y"] + text["height"] / 2  # xterm's screen layer takes the mouse: drag over it
    page.mouse.move(text["x"] + 1, y)
    page.mouse.down()
    page.mouse.move(text["x"] + text["width"] / 2, y, steps=5)
    page.mouse.move(text["x"] + text["width"] - 1, y, steps=5)
    page.mouse.up()  # selecting copies
    copied = wait_for(lambda: page.evaluate("navigator.clipboard.readText()"), 10,
                      "the selection in the clipboard")
    assert copied == "pasted-42"

    # Staff suspend the customer: the open console closes at once, saying why.
    try:
        staff.post(f"/api/v1/customers/{customer['id']}/suspend/", expect=200)
        page.locator("#console[data-state=closed]").wait_for(timeout=5_000)
        page.locator("#console-status", has_text="suspended").wait_for(timeout=5_000)
        shot(page, "console-03-suspended")
    finally:
        staff.post(f"/api/v1/customers/{customer['id']}/unsuspend/", expect=200)

    audit = staff.get(f"/api/v1/audit-log/?action=ve.console&object_id={veid}")["results"]
    assert audit and audit[0]["detail"]["staff"] is False
    assert policy_errors == [], json.dumps(policy_errors)  # xterm's styles carry the nonce
    page.context.close()
    api.wait_operation(api.post(f"/api/v1/environments/{veid}/terminate/"))


def install_template(stack, cache):
    """Put a template built in ``cache`` into the node's cache (the node's network has no
    way out to build a Debian one itself); each file appears whole."""
    target = stack.engine().layout.cache_dir
    for item in cache.iterdir():
        shutil.copy2(item, target / f".{item.name}.copy")
        os.replace(target / f".{item.name}.copy", target / item.name)


@pytest.mark.parametrize("template", DEBIAN_TEMPLATES)
def test_a_debian_vps_console_logs_in_at_systemds_console_getty(browser, live_stack,
                                                                debian_builds, template):
    """A Debian VPS boots systemd; its console-getty asks for a login in the browser's
    console (with Debian's /etc/issue above it), root logs in with the VPS's password
    and ``hostname`` answers with the VPS's name."""
    install_template(live_stack, debian_builds[template].result())
    api, hostname = live_stack.api("demo"), f"{template}.example.com"
    veid = create_vps(api, live_stack, template, hostname)

    page = sign_in(browser, live_stack, "demo")
    page.goto(f"{live_stack.base}/vps/{veid}/")
    open_console(page)
    type_line(page, "")  # agetty asks again if its first prompt left the backlog
    login = f"{template} login:"  # agetty shows the host name up to its first dot
    rows = wait_screen(page, lambda rows: any(r.endswith(login) for r in rows),
                       "systemd's console-getty", timeout=120)
    assert any(r.startswith("Debian GNU/Linux") for r in rows), rows
    shot(page, f"console-{template}-login")
    log_in(page)

    type_hostname(page, hostname)
    shot(page, f"console-{template}-hostname")
    page.context.close()
    api.wait_operation(api.post(f"/api/v1/environments/{veid}/terminate/"))
