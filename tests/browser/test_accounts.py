"""Issue 14 in real Chromium: enrolling in two-factor sign-in and signing in with a code
(computed here from the key the page shows), against Django's live test server: no
node, Redis or workers are needed for the account pages. The console must show no
Content-Security-Policy violation and no error on the way."""

import base64
import os
import time

import pytest

from tests.browser.test_portal import browser, shot  # noqa: F401  (browser: a fixture)
from tests.staffing import make_staff, totp

PASSWORD = "Blue-Harbour-7731"


@pytest.fixture(scope="module", autouse=True)
def _orm_beside_playwright():
    """Playwright's sync API runs an event loop in this thread; the test's own ORM calls
    (making users, the test database) are still synchronous and safe here."""
    old = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if old is None:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = old


@pytest.fixture
def console(request):
    """Messages of the page's console that are errors (CSP violations are)."""
    return []


def _page(browser, live_server, console):  # noqa: F811
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(20_000)
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(str(e)))
    return page


def _sign_in(page, base, username):
    page.goto(base + "/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def _next_step_code(key_hex, used_step):
    """A code of a step not used yet: the server takes one step ahead, or wait."""
    step = int(time.time() // 30)
    if used_step is not None and used_step >= step + 1:
        time.sleep((used_step + 1) * 30 - time.time() + 0.5)
        step = int(time.time() // 30)
    wanted = step if used_step is None or used_step < step else step + 1
    return totp(key_hex, at=wanted * 30 + 1), wanted


@pytest.mark.django_db(transaction=True)
def test_staff_enrol_in_two_factor_then_sign_in_with_a_code(browser, live_server,  # noqa: F811
                                                             console):
    staff = make_staff("ops", PASSWORD)
    staff.totp_device.delete()  # a new staff member: no authenticator yet
    page = _page(browser, live_server, console)
    _sign_in(page, live_server.url, "ops")
    assert "/account/two-factor/" in page.url  # sent to enrol before anything else
    assert page.locator("#enrol svg").count() == 1  # the QR code
    key = base64.b32decode(page.inner_text("#totp-secret")).hex()
    shot(page, "20-two-factor-enrol")
    code, used = _next_step_code(key, None)
    page.fill("input[name=code]", code)
    page.click("#enrol-form button[type=submit]")
    page.wait_for_selector("#recovery-codes")
    assert page.locator("#recovery-codes li").count() == 10
    shot(page, "21-two-factor-recovery-codes")
    page.click("#continue")
    page.wait_for_load_state()
    assert page.url.rstrip("/").endswith("/staff/vps") or "/staff/" in page.url
    assert page.locator("h1").first.is_visible()

    page.click("form.logout button[type=submit]")
    page.wait_for_load_state()
    _sign_in(page, live_server.url, "ops")
    assert "/account/two-factor/verify/" in page.url
    page.fill("input[name=code]", "000000")
    page.click("#verify-form button[type=submit]")
    page.wait_for_selector("#verify-form .error")
    time.sleep(1.1)  # the device backs off a second after a wrong code
    code, used = _next_step_code(key, used)
    page.fill("input[name=code]", code)
    page.click("#verify-form button[type=submit]")
    page.wait_for_load_state()
    assert "/staff/" in page.url and "two-factor" not in page.url
    shot(page, "22-two-factor-signed-in")
    page.context.close()
    assert _csp_violations(console) == []


def _csp_violations(console):
    return [m for m in console if "Content Security Policy" in m or "Refused to" in m]


@pytest.mark.django_db(transaction=True)
def test_the_pages_work_under_the_content_security_policy(browser, live_server,  # noqa: F811
                                                          console):
    """Every page a customer and an administrator open, with the policy on: no CSP
    violation in the console, and the pages' own scripts did their work."""
    from django.contrib.auth.models import User

    from hosting.customers.models import Customer
    from hosting.environments.models import OSTemplate, VirtualEnvironment as VE
    from hosting.nodes.models import Node
    from hosting.plans.models import Plan
    node = Node.objects.create(name="hn1", state="online", ram_bytes=8 << 30, cpus=4,
                               disk_bytes=500 << 30)
    template = OSTemplate.objects.create(name="busybox", title="BusyBox")
    plan = Plan.objects.create(name="small", ram_mb=512, monthly_price=5)
    bob = Customer.objects.create(user=User.objects.create_user("bob", password=PASSWORD),
                                  company="Bob GmbH")
    ve = VE.objects.create(veid=102, owner=bob, plan=plan, node=node, template=template,
                           hostname="web-b.example.com", desired_state="running",
                           actual_state="running")
    staff = make_staff("ops", PASSWORD)

    page = _page(browser, live_server, console)
    base = live_server.url
    _sign_in(page, base, "bob")
    for path in ("/", "/order/", "/account/api-keys/", "/account/two-factor/",
                 "/api/v1/docs/"):
        page.goto(base + path)
        page.wait_for_load_state("networkidle")
        assert page.locator("body").inner_text().strip(), path
    page.goto(f"{base}/vps/{ve.veid}/")
    page.wait_for_selector("#usage[data-loaded]")  # usage.js drew the charts
    page.click("#btn-terminate")  # app.js: the button brings the password form up
    assert page.evaluate("document.activeElement.name") == "current_password"
    page.goto(base + "/api/v1/docs/")
    page.wait_for_selector(".swagger-ui .info")  # Swagger UI ran from its script file
    page.context.close()
    # Redoc's bundle fetches its vendor's logo from the internet: the policy blocks that,
    # and that is the only thing it blocks there.
    redoc_console = []
    page = _page(browser, live_server, redoc_console)
    _sign_in(page, base, "bob")
    page.goto(base + "/api/v1/redoc/")
    page.wait_for_selector("redoc .api-info, .api-content")
    page.wait_for_load_state("networkidle")
    assert all("https://cdn.redoc.ly/" in m for m in _csp_violations(redoc_console)), \
        redoc_console
    page.context.close()

    page = _page(browser, live_server, console)
    _sign_in(page, base, "ops")
    code, _ = _next_step_code(staff.totp_device.key, None)
    page.fill("input[name=code]", code)
    page.click("#verify-form button[type=submit]")
    page.wait_for_load_state()
    for path in ("/staff/nodes/", f"/staff/nodes/{node.pk}/", "/staff/plans/",
                 "/staff/plans/new/", "/staff/templates/", "/staff/customers/", "/staff/vps/",
                 "/staff/operations/", "/staff/audit/", "/staff/api-keys/",
                 "/staff/reports/overcommit/", f"/vps/{ve.veid}/", "/admin/"):
        response = page.goto(base + path)
        page.wait_for_load_state("networkidle")
        assert response.status == 200, path
    shot(page, "23-csp-admin")
    page.context.close()
    assert _csp_violations(console) == []
