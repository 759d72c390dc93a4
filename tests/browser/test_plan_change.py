"""A customer upgrades their VPS's plan in real Chromium; the node applies it live.

Screenshots land in test-artifacts/browser/ (plan-*.png).
"""

from pathlib import Path

from tests.browser import test_portal as portal
from tests.browser.test_portal import shot, sign_in, wait_for

browser = portal.browser  # the same Chromium fixture

MIB = 1 << 20


def test_customer_upgrades_the_plan_live(browser, live_stack):
    api = live_stack.api("demo")
    op = api.wait_operation(api.post("/api/v1/environments/", {
        "plan": "VPS S", "template": "busybox", "hostname": "upgrade.example.com",
        "root_password": "upgrade-pass-1"}))
    assert op["state"] == "succeeded", (op, live_stack.logs("node-worker"))
    veid = op["veid"]
    pid = live_stack.vectl_json("status", veid)["init_pid"]
    limit = Path(live_stack.engine().cgroups.file_path(str(veid), "memory.limit_in_bytes"))
    assert int(limit.read_text()) == 256 * MIB

    # VPS M's RAM as it is now: the portal test may have raised it in this stack.
    plans = api.get("/api/v1/plans/")
    plans = plans["results"] if isinstance(plans, dict) else plans
    m_ram = next(p["ram_mb"] for p in plans if p["name"] == "VPS M")

    page = sign_in(browser, live_stack, "demo")
    page.on("dialog", lambda dialog: dialog.accept())  # "Move ... to plan VPS M?"
    page.goto(f"{live_stack.base}/vps/{veid}/")
    page.click("#btn-plan")
    page.wait_for_url(f"**/vps/{veid}/plan/")
    row = page.locator("#plans tr[data-plan='VPS M']")
    assert "6.00" in row.inner_text() and f"RAM: 256 MiB → {m_ram} MiB" in row.inner_text()
    assert row.locator(".state", has_text="upgrade").count() == 1
    shot(page, "plan-01-choose")
    row.locator("button", has_text="Change to VPS M").click()
    page.wait_for_url(f"**/vps/{veid}/")
    page.locator(".flash", has_text="moving to plan VPS M").wait_for()
    page.locator("#operations tr[data-kind=plan][data-state=succeeded]").wait_for(
        timeout=60_000)
    shot(page, "plan-02-changed")
    assert "VPS M" in page.locator(".heading .muted").first.inner_text()

    # Applied live: the cgroup's limit changed and init is the same process.
    wait_for(lambda: int(limit.read_text()) == m_ram * MIB, 10, "the new memory limit")
    status = live_stack.vectl_json("status", veid)
    assert status["ram_limit"] == m_ram * MIB and status["init_pid"] == pid

    # Back down is not for customers here: the page says why instead of offering it.
    page.click("#btn-plan")
    back = page.locator("#plans tr[data-plan='VPS S']")
    assert back.locator("button").count() == 0
    assert "only upgrades" in back.locator(".refusal").inner_text()
    shot(page, "plan-03-downgrade-refused")
    page.context.close()
    api.wait_operation(api.post(f"/api/v1/environments/{veid}/terminate/"))
