"""A customer backs their VPS up, browses the backup, downloads a file from it, restores
the file in place and restores the whole backup into a new VPS, in real Chromium against
the whole product (the node's workers take, list, serve and restore the backup).

Screenshots land in test-artifacts/browser/ (backup-*.png).
"""

import time
from contextlib import contextmanager

from tests.browser import test_portal as portal
from tests.browser.test_portal import shot, sign_in

browser = portal.browser  # the same Chromium fixture

PAGE = "index.html"
FILE = f"/srv/site/{PAGE}"


@contextmanager
def backups_on_plan_s(staff):
    """VPS S keeps 2 daily and 1 weekly backups, and the node's nightly window stays
    shut meanwhile (no scheduled backup races the customer's); both as they were after."""
    plan = next(p for p in _results(staff.get("/api/v1/plans/")) if p["name"] == "VPS S")
    node = _results(staff.get("/api/v1/nodes/"))[0]
    shut = {"backup_window_start": (time.gmtime().tm_hour + 12) % 24, "backup_window_hours": 1}
    staff.patch(f"/api/v1/plans/{plan['id']}/", {"backups_daily": 2, "backups_weekly": 1})
    staff.patch(f"/api/v1/nodes/{node['id']}/", shut)
    try:
        yield
    finally:
        staff.patch(f"/api/v1/plans/{plan['id']}/", {key: plan[key] for key in (
            "backups_daily", "backups_weekly")})
        staff.patch(f"/api/v1/nodes/{node['id']}/", {key: node[key] for key in shut})


def _results(answer):
    return answer["results"] if isinstance(answer, dict) else answer


def _sh(engine, veid, script):
    out = engine.exec(veid, ["sh", "-c", script])
    assert out.returncode == 0, out.stdout
    return out.stdout.decode()


def _wait_succeeded(page, kind, timeout=90_000):
    """Until the page (which follows its operations by itself) shows ``kind`` done."""
    page.locator(f"#operations tr[data-kind={kind}][data-state=succeeded]").wait_for(
        timeout=timeout)


def test_customer_backs_up_browses_downloads_and_restores(browser, live_stack):
    api, engine = live_stack.api("demo"), live_stack.engine()
    op = api.wait_operation(api.post("/api/v1/environments/", {
        "plan": "VPS S", "template": "busybox", "hostname": "saved.example.com",
        "root_password": "saved-pass-1"}))
    assert op["state"] == "succeeded", (op, live_stack.logs("node-worker"))
    veid = op["veid"]
    _sh(engine, veid, f"mkdir -p /srv/site && echo 'hello v1' > {FILE}")

    with backups_on_plan_s(live_stack.api("admin")):
        page = sign_in(browser, live_stack, "demo")
        page.goto(f"{live_stack.base}/vps/{veid}/")
        card = page.locator("section#backups")
        assert "No backups yet." in card.inner_text()
        page.click("#btn-backup")
        page.wait_for_url(f"**/vps/{veid}/")
        _wait_succeeded(page, "backup")
        page.reload()
        rows = page.locator("table#backup-list tbody tr")
        assert rows.count() == 1
        shot(page, "backup-list")
        _sh(engine, veid, f"echo broken > {FILE}")

        # Browse: folder by folder down to the file.
        rows.locator("a", has_text="Browse files").click()
        page.wait_for_url(f"**/vps/{veid}/backups/*/")
        for folder in ("srv/", "site/"):  # each click asks the node for a listing
            page.locator("#backup-entries a", has_text=folder).click()
            page.locator("#backup-trail a", has_text=folder.rstrip("/")).wait_for(
                timeout=60_000)
        entry = page.locator(f"table#backup-entries tr[data-entry='{PAGE}']")
        entry.wait_for()
        assert page.locator("table#backup-entries tbody tr").count() == 1
        shot(page, "backup-browse")

        # Download with the browser's session: the file as it was backed up.
        href = entry.locator("a", has_text="Download").get_attribute("href")
        got = page.request.get(live_stack.base + href)
        assert got.status == 200, got.text()
        assert got.body() == b"hello v1\n"
        assert f'filename="{PAGE}"' in got.headers["content-disposition"]

        # Restore the file in place (the folder left blank).
        entry.locator("details.restore-files summary").click()
        form = entry.locator("details.restore-files form")
        form.locator("input[name=into]").fill("")
        form.locator("button", has_text="Restore").click()
        page.wait_for_url(f"**/vps/{veid}/")
        page.locator(".flash", has_text=f"{FILE} is being restored").wait_for()
        _wait_succeeded(page, "restore_files")
        page.reload()  # the buttons as they are now, not as during the restore
        shot(page, "backup-restored")
        assert _sh(engine, veid, f"cat {FILE}") == "hello v1\n"

        # Restore the whole backup into a new VPS.
        page.locator("#backup-list a", has_text="Restore into a new VPS").click()
        page.wait_for_url(f"**/vps/{veid}/backups/*/new/")
        page.fill("#restore-new-form input[name=hostname]", "copy.example.com")
        page.click("#btn-restore-new")
        page.wait_for_url("**/vps/*/")
        copy = int(page.url.rstrip("/").rsplit("/", 1)[1])
        assert copy != veid
        page.locator(".flash", has_text="copy.example.com is being made").wait_for()
        _wait_succeeded(page, "create", timeout=120_000)
        page.locator("#ve-state", has_text="Running").wait_for()
        page.reload()
        shot(page, "backup-new")
        assert api.get(f"/api/v1/environments/{copy}/")["hostname"] == "copy.example.com"
        assert _sh(engine, copy, f"cat {FILE}") == "hello v1\n"
        page.context.close()

    for gone in (veid, copy):
        api.wait_operation(api.post(f"/api/v1/environments/{gone}/terminate/"))
