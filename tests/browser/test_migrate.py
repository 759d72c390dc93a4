"""Staff migrate a VPS in real Chromium on a two-node stack and see it arrive; its owner
sees the move in the history. Screenshots land in test-artifacts/browser/ (migrate-*.png).
"""

from tests.browser import test_portal as portal
from tests.browser.test_portal import shot, sign_in
from tests.hosting.test_fleet_live import _identities_reported, _where, fleet, place_on  # noqa: F401
from hosting.stack import wait_until

browser = portal.browser  # the same Chromium fixture


def test_staff_migrate_a_vps_and_see_it_arrive(fleet, browser):  # noqa: F811
    # fleet first: its set-up uses pyroute2, whose event loop must not meet Playwright's
    live, staff, customer = fleet, fleet.api("admin"), fleet.api("demo")
    one, two = live.stack.nodes
    # A VPS on node two first: it builds the busybox template there (a node takes a
    # VPS only with its template), then the one to move, on node one.
    place_on(live, staff, customer, two, "already-there.example.com")
    ve = place_on(live, staff, customer, one, "browsed-move.example.com")
    wait_until(lambda: _identities_reported(staff, (one, two), live), 60,
               "the nodes did not report their migration identities")
    for node in staff.get("/api/v1/nodes/")["results"]:  # both open again
        staff.patch(f"/api/v1/nodes/{node['id']}/", {"state": "online"})
    veid = ve["veid"]

    page = sign_in(browser, live, "admin")
    page.on("dialog", lambda dialog: dialog.accept())  # "Move ... to another node?"
    page.goto(f"{live.base}/vps/{veid}/")
    card = page.locator("#migrate")
    assert f"On node {one.name}" in card.inner_text()
    page.select_option("#migrate-form select[name=node]", two.name)
    shot(page, "migrate-01-choose")
    page.click("#btn-migrate")
    page.wait_for_url(f"**/vps/{veid}/")
    page.locator(".flash", has_text="Moving browsed-move.example.com").wait_for()
    page.locator("#operations tr[data-kind=migrate][data-state=succeeded]").wait_for(
        timeout=120_000)
    page.reload()
    assert f"On node {two.name}" in page.locator("#migrate").inner_text()
    shot(page, "migrate-02-arrived")
    assert _where(live, veid) == {two.name: "running"}
    page.context.close()

    owner = sign_in(browser, live, "demo")
    owner.goto(f"{live.base}/vps/{veid}/")
    row = owner.locator("#operations tr[data-kind=migrate]")
    assert "Move to another host" in row.inner_text()
    assert "moved to another host, with its processes and connections" in row.inner_text()
    assert owner.locator("#migrate").count() == 0  # staff only
    shot(owner, "migrate-03-customer-history")
    owner.context.close()
