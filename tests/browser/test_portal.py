"""Real headless Chromium (Debian's) driven by Playwright against the running product.

Screenshots land in test-artifacts/browser/ (CI keeps them).
"""

import os
import shutil
import time
from pathlib import Path

import pytest

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(__file__).resolve().parents[2]
                                / "test-artifacts")) / "browser"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.skip("browser tests need Debian's chromium (make deps installs it)")
    from playwright.sync_api import sync_playwright
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--no-first-run"])
        yield chromium
        chromium.close()


PHONE = {"width": 390, "height": 844}


def sign_in(browser, stack, username, viewport=None):
    page = browser.new_context(viewport=viewport or {"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(20_000)
    page.goto(stack.base + "/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", stack.credentials()[username])
    page.click("button[type=submit]")
    page.wait_for_load_state()
    code = stack.totp_code(username)
    if code is not None:  # staff: the second step
        page.fill("input[name=code]", code)
        page.click("#verify-form button[type=submit]")
        page.wait_for_load_state()
    return page


def shot(page, name):
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)
    return value


def test_customer_orders_and_reboots_then_staff_raise_the_plans_ram(browser, live_stack):
    page = sign_in(browser, live_stack, "demo")
    assert page.url.rstrip("/") == live_stack.base
    shot(page, "01-customer-home")

    page.click("text=Order a VPS")
    page.select_option("select[name=plan]",
                       label="VPS M: 512 MiB RAM, 1 CPU, 10 GiB disk, 6.00/month")
    page.select_option("select[name=template]", label="BusyBox (minimal Linux)")
    page.fill("input[name=hostname]", "browser1.example.com")
    page.fill("input[name=root_password]", "browser-pass-1")
    shot(page, "02-order-form")
    page.click("#order-form button[type=submit]")
    page.wait_for_url("**/vps/*/")
    veid = int(page.url.rstrip("/").rsplit("/", 1)[1])
    # The page follows the create operation by itself (polling) until it runs.
    page.locator("#ve-state", has_text="Running").wait_for(timeout=90_000)
    page.locator("#operations tr[data-kind=create][data-state=succeeded]").wait_for()
    shot(page, "03-vps-running")
    pid_before = live_stack.vectl_json("status", veid)["init_pid"]

    page.click("#btn-reboot")
    # While the reboot runs the page says so, then shows the VPS running again.
    page.locator("#ve-state", has_text="Rebooting").wait_for()
    page.locator("#live[data-live=open]").wait_for()  # its push socket listens
    # The buttons follow: none may be pressed while the reboot runs (the same fragment).
    assert [page.locator(f"#btn-{name}").is_disabled()
            for name in ("start", "stop", "reboot", "terminate")] == [True] * 4
    shot(page, "04-rebooting")
    page.locator("#operations tr[data-kind=restart][data-state=succeeded]").wait_for(
        timeout=60_000)
    page.locator("#ve-state", has_text="Running").wait_for()
    page.locator("#btn-stop:enabled").wait_for()  # enabled again once it runs
    assert page.locator("#btn-start").is_disabled()
    shot(page, "04-rebooted")
    status = live_stack.vectl_json("status", veid)
    assert status["state"] == "running" and status["init_pid"] != pid_before
    pushed = int(page.get_attribute("#live", "data-pushes") or 0)
    assert pushed >= 1  # the node's end of the reboot was pushed, not polled
    # A reboot from inside (over SSH, say) comes back by itself and shows in the history.
    assert live_stack.vectl("exec", veid, "reboot").returncode == 0
    page.locator("#operations tr[data-kind=restart]", has_text="rebooted from inside").wait_for(
        timeout=30_000)
    assert int(page.get_attribute("#live", "data-pushes")) > pushed
    page.locator("#ve-state", has_text="Running").wait_for()
    shot(page, "04-rebooted-from-inside")
    assert live_stack.vectl_json("status", veid)["init_pid"] != status["init_pid"]
    page.context.close()

    staff = sign_in(browser, live_stack, "admin")
    staff.goto(live_stack.base + "/staff/plans/")
    staff.click("text=VPS M")
    ram = int(staff.input_value("input[name=ram_mb]"))
    staff.fill("input[name=ram_mb]", str(ram + 128))
    shot(staff, "05-staff-plan-edit")
    staff.click("#plan-form button[type=submit]")
    staff.locator(".flash", has_text="new limits queued for 1").wait_for()
    shot(staff, "06-staff-plan-saved")
    wait_for(lambda: live_stack.vectl_json("status", veid)["ram_limit"] == (ram + 128) << 20,
             30, "the running VE's memory limit to follow the plan")
    limit = live_stack.engine().cgroups.file_path(str(veid), "memory.limit_in_bytes")
    assert int(Path(limit).read_text()) == (ram + 128) << 20
    staff.goto(live_stack.base + "/staff/nodes/")
    shot(staff, "07-staff-nodes")
    staff.goto(live_stack.base + "/staff/operations/")
    changed = staff.locator("tr", has=staff.locator(f"a:text-is('{veid} browser1.example.com')"))
    assert changed.locator("td:text-is('Change limits')").count() == 1
    shot(staff, "08-staff-operations")
    staff.context.close()

    api = live_stack.api("demo")
    api.wait_operation(api.post(f"/api/v1/environments/{veid}/terminate/"))


def test_usage_graphs_for_the_customer_and_staff_and_the_node(browser, live_stack):
    api = live_stack.api("demo")
    op = api.wait_operation(api.post("/api/v1/environments/", {
        "plan": "VPS S", "template": "busybox", "hostname": "graphs.example.com",
        "root_password": "graphs-pass-1"}))
    assert op["state"] == "succeeded", op
    veid = op["veid"]
    # A little work inside, so the graphs have something to show.
    live_stack.engine().exec(veid, ["sh", "-c", "dd if=/dev/zero of=/fill bs=1M count=20"])
    wait_for(lambda: len(api.get(f"/api/v1/environments/{veid}/usage/?range=1h")["time"]) >= 3,
             60, "three usage samples of the new VPS")

    page = sign_in(browser, live_stack, "demo")
    page.goto(f"{live_stack.base}/vps/{veid}/")
    page.click("#usage [data-range='1h']")
    page.wait_for_selector("#usage[data-loaded='1h']")
    for chart in ("cpu", "ram", "disk", "net", "packets", "processes", "connections"):
        figure = page.locator(f"#chart-{chart}")
        figure.locator("canvas").first.wait_for()
        assert int(figure.get_attribute("data-points")) >= 3, chart
    page.locator("#chart-hits canvas").first.wait_for()  # its limit hits (failcnt) too
    assert page.locator("#chart-ram .u-legend", has_text="limit").count() == 0  # staff only
    shot(page, "09-customer-usage-graphs")
    page.context.close()

    staff = sign_in(browser, live_stack, "admin")
    staff.goto(f"{live_stack.base}/vps/{veid}/")
    staff.click("#usage [data-range='1h']")
    staff.wait_for_selector("#usage[data-loaded='1h']")
    staff.locator("#chart-hits canvas").first.wait_for()
    assert staff.locator("#chart-ram .u-legend", has_text="limit").count() == 1
    # the connection cap as a dashed line too (VPS S caps connections: 16384 by default)
    assert staff.locator("#chart-connections .u-legend", has_text="limit").count() == 1
    shot(staff, "10-staff-usage-graphs")
    node = live_stack.api("admin").get("/api/v1/nodes/")["results"][0]["id"]
    staff.goto(f"{live_stack.base}/staff/nodes/{node}/")
    staff.click("#node-usage [data-range='1h']")
    staff.wait_for_selector("#node-usage[data-loaded='1h']")
    for chart in ("ram", "cpu"):
        figure = staff.locator(f"#chart-node-{chart}")
        figure.locator("canvas").first.wait_for()
        assert int(figure.get_attribute("data-points")) >= 3, chart
        assert figure.locator(".u-legend", has_text="graphs.example.com").count() == 1
        assert figure.locator(".u-legend", has_text="node total").count() == 1
    shot(staff, "11-staff-node-usage")
    staff.goto(f"{live_stack.base}/staff/reports/overcommit/?days=1")
    row = staff.locator("#nodes-report tr[data-node]").first
    row.wait_for()
    node_row = live_stack.api("admin").get(f"/api/v1/nodes/{node}/")
    assert row.get_attribute("data-node") == node_row["name"]
    assert row.locator("td").nth(1).inner_text() == str(node_row["environments"])
    # the density chart of that node and the fleet's headroom are drawn (SVG, no script)
    assert staff.locator(f"svg#density-{node_row['name']} g.bar").count() == 12
    assert staff.locator("svg#fleet-headroom g.node").count() == 1
    assert staff.locator("#plans-report tr[data-plan='VPS S']").count() == 1
    shot(staff, "12-staff-overcommit-report")
    # What if three more VPS S were ordered: the form answers with the placement rule.
    staff.fill("#whatif-add input[name='count']", "3")
    staff.select_option("#whatif-add select[name='plan']", label="VPS S")
    staff.click("#whatif-add button[type='submit']")
    staff.wait_for_selector("#whatif-report")
    assert staff.inner_text("#whatif-question") == "3 more VPSes of plan VPS S: 3 placed"
    added = staff.locator("#whatif-report tr[data-node]")
    assert sum(int(added.nth(i).get_attribute("data-added")) for i in range(added.count())) == 3
    shot(staff, "13-staff-what-if")
    staff.context.close()
    api.wait_operation(api.post(f"/api/v1/environments/{veid}/terminate/"))


def test_the_customer_pages_fit_a_phone(browser, live_stack):
    """390 px wide (an iPhone 12-15): nothing wider than the screen on the VPS list and a
    VPS's page, whose graphs draw within it too."""
    api = live_stack.api("demo")
    op = api.wait_operation(api.post("/api/v1/environments/", {
        "plan": "VPS S", "template": "busybox",
        "hostname": "a-rather-long-host-name-for-a-phone.example.com",
        "root_password": "phone-pass-1"}))
    assert op["state"] == "succeeded", op
    veid = op["veid"]
    page = sign_in(browser, live_stack, "demo", viewport=PHONE)

    def width():
        return page.evaluate("document.documentElement.scrollWidth")

    page.goto(live_stack.base + "/")
    page.locator("#vps-list").wait_for()
    shot(page, "14-phone-vps-list")
    assert width() <= PHONE["width"]
    assert page.locator("header.top nav a:text-is('Order')").is_visible()
    page.goto(f"{live_stack.base}/vps/{veid}/")
    page.wait_for_selector("#usage[data-loaded='24h']")
    page.locator("#chart-ram canvas").first.wait_for()
    shot(page, "15-phone-vps-detail")
    assert width() <= PHONE["width"]
    assert page.locator("#btn-stop").is_enabled() and page.locator("#btn-start").is_disabled()
    page.goto(live_stack.base + "/order/")
    shot(page, "16-phone-order")
    assert width() <= PHONE["width"]
    page.context.close()
    api.wait_operation(api.post(f"/api/v1/environments/{veid}/terminate/"))
