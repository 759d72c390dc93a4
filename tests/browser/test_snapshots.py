"""A customer snapshots their VPS before a risky change and rolls back to it, in real
Chromium against the whole product (the node worker takes and restores the snapshot).

Screenshots land in test-artifacts/browser/ (snapshot-*.png).
"""

from tests.browser import test_portal as portal
from tests.browser.test_portal import shot, sign_in

browser = portal.browser  # the same Chromium fixture


def test_customer_takes_a_snapshot_and_rolls_back(browser, live_stack):
    api = live_stack.api("demo")
    op = api.wait_operation(api.post("/api/v1/environments/", {
        "plan": "VPS S", "template": "busybox", "hostname": "snapped.example.com",
        "root_password": "snapped-pass-1"}))
    assert op["state"] == "succeeded", (op, live_stack.logs("node-worker"))
    veid = op["veid"]
    engine = live_stack.engine()

    def files():
        return engine.exec(veid, ["ls", "/root"]).stdout.decode().split()

    engine.exec(veid, ["sh", "-c", "echo precious > /root/A"])

    page = sign_in(browser, live_stack, "demo")
    page.on("dialog", lambda dialog: dialog.accept())  # "Roll ... back to ...?"
    page.goto(f"{live_stack.base}/vps/{veid}/")
    assert "0 of 2 kept" in page.locator("#snapshot-allowance").inner_text()
    page.fill("#snapshot-form input[name=name]", "before-upgrade")
    shot(page, "snapshot-01-take")
    page.click("#btn-snapshot")
    page.locator("#operations tr[data-kind=snapshot][data-state=succeeded]").wait_for(
        timeout=60_000)
    page.reload()
    row = page.locator("#snapshot-list tr[data-snapshot='before-upgrade']")
    row.wait_for()
    assert "1 of 2 kept" in page.locator("#snapshot-allowance").inner_text()
    shot(page, "snapshot-02-taken")

    engine.exec(veid, ["sh", "-c", "rm /root/A; echo broken > /root/B"])
    assert files() == ["B"]
    row.locator("summary", has_text="Roll back").click()
    row.locator("input[name=current_password]").fill(live_stack.credentials()["demo"])
    row.locator("button", has_text="Roll back").click()
    page.locator(".flash", has_text="rolled back to before-upgrade").wait_for()
    page.locator("#operations tr[data-kind=rollback][data-state=succeeded]").wait_for(
        timeout=60_000)
    page.locator("#ve-state", has_text="Running").wait_for()
    shot(page, "snapshot-03-rolled-back")
    assert files() == ["A"]

    page.reload()  # the card's buttons are as the page loaded them (during the rollback)
    page.locator("#snapshot-list tr[data-snapshot='before-upgrade'] button",
                 has_text="Delete").click()
    page.locator("#operations tr[data-kind=snapshot_delete][data-state=succeeded]").wait_for(
        timeout=60_000)
    page.reload()
    assert page.locator("#snapshot-list").count() == 0
    assert engine.snapshots(veid) == []
    page.context.close()
    api.wait_operation(api.post(f"/api/v1/environments/{veid}/terminate/"))
