"""A customer opens their VPS's console in the browser, logs in at its getty, types
``hostname`` and sees the VPS's host name; the terminal follows the window's size;
copy and paste work; suspending the customer closes the open console at once. Real
Chromium against the whole product: the web page, the ASGI server's WebSocket, the
node's console worker and the engine's console of a running busybox VE.

Screenshots land in test-artifacts/browser/ (console-*.png).
"""

import json

from tests.browser import test_portal as portal
from tests.browser.test_portal import shot, sign_in, wait_for

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


def log_in_if_asked(page):
    """The VE's getty asks for root and its password; a shell prompt needs nothing."""
    rows = wait_screen(page, lambda rows: any(r.endswith(("login:", "#")) for r in rows),
                       "a login prompt or a shell")
    if not any(r.endswith("login:") for r in rows):
        return
    type_line(page, "root")
    wait_screen(page, lambda rows: any(r.endswith("Password:") for r in rows), "Password:")
    type_line(page, ROOT_PASSWORD)
    wait_screen(page, lambda rows: [r for r in rows if r][-1].endswith("#"), "a root shell")


def test_customer_opens_the_console_types_hostname_and_suspension_closes_it(browser,
                                                                           live_stack):
    api, staff = live_stack.api("demo"), live_stack.api("admin")
    op = api.wait_operation(api.post("/api/v1/environments/", {
        "plan": "VPS S", "template": "busybox", "hostname": HOSTNAME,
        "root_password": ROOT_PASSWORD}))
    assert op["state"] == "succeeded", (op, live_stack.logs("node-worker"))
    veid = op["veid"]
    customer = next(c for c in staff.get("/api/v1/customers/")["results"]
                    if c["username"] == "demo")

    page = sign_in(browser, live_stack, "demo")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                   origin=live_stack.base)
    page.goto(f"{live_stack.base}/vps/{veid}/")
    policy_errors = []
    page.on("console", lambda m: policy_errors.append(m.text)
            if "Content Security Policy" in m.text and "style" in m.text else None)
    page.click("#btn-console")
    page.locator("#console[data-state=open]").wait_for()
    page.locator("#console-status", has_text="Connected").wait_for()
    type_line(page, "")  # wake a quiet getty
    shot(page, "console-01-open")
    log_in_if_asked(page)

    type_line(page, "hostname")
    wait_screen(page, lambda rows: HOSTNAME in rows, "the host name alone on a line")
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
