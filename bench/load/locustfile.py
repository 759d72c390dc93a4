"""The load test's users (run by bench/load/run.py; `make loadtest`).

Customers sign in and browse their VPS pages, graphs and operations, now and then
reboot one or order a new one; staff sign in with a code from their authenticator
and open the lists and reports; a billing system polls operations and VPSes with
its API key; Prometheus scrapes /metrics. Who is who comes from the seeded fleet
(LOADTEST_SEEDED names its JSON, written by run.py from seed.fleet()).

Request names group URLs by kind ("/vps/[veid]/"), so the statistics are per page.
Statistics start LOADTEST_WARMUP seconds in, once every user has signed in.
"""

import itertools
import json
import os
import random
import re
import sys
import uuid

from locust import HttpUser, between, events, task

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from tests.staffing import totp  # noqa: E402  (RFC 6238 with the standard library)

SEEDED = json.loads(open(os.environ["LOADTEST_SEEDED"]).read())
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
ORDER_ERRORS = re.compile(r'id="order-errors">(.*?)</div>', re.S)
_staff_logins = itertools.cycle(SEEDED["staff"]["logins"])  # one login per staff user
ALL_VEIDS = tuple(itertools.chain.from_iterable(SEEDED["customers"].values()))
_ranges = ("24h", "7d", "30d")


def _csrf(response):
    found = CSRF.search(response.text)
    if not found:
        response.failure("no CSRF token on the page")
        return ""
    return found.group(1)


def close_after_each(user):
    """One connection per request, as a reverse proxy talks to gunicorn by default
    (nginx's upstreams are HTTP/1.0): a client keeping connections open across its
    think time races gunicorn's 2 s keep-alive, which closes them meanwhile."""
    user.client.headers["Connection"] = "close"


def sign_in(user, username, password):
    """The portal's sign-in form, as a browser posts it."""
    with user.client.get("/login/", name="/login/", catch_response=True) as page:
        token = _csrf(page)
    with user.client.post("/login/", {"username": username, "password": password,
                                      "csrfmiddlewaretoken": token},
                          name="/login/ (post)", allow_redirects=False,
                          catch_response=True) as answer:
        if answer.status_code != 302:
            answer.failure(f"sign-in of {username} answered {answer.status_code}")


def staff_sign_in(user):
    """Sign in with the next staff login and a code from its authenticator (each login
    is one user's: a code is accepted once)."""
    login = next(_staff_logins)
    sign_in(user, login["username"], SEEDED["password"])
    with user.client.get("/account/two-factor/verify/", name="/account/two-factor/verify/",
                         catch_response=True) as page:
        token = _csrf(page)
    with user.client.post("/account/two-factor/verify/",
                          {"csrfmiddlewaretoken": token, "code": totp(login["totp_key"])},
                          name="/account/two-factor/verify/ (post)", allow_redirects=False,
                          catch_response=True) as answer:
        if answer.status_code != 302:
            answer.failure(f"the code of {login['username']} was refused")


class Customer(HttpUser):
    """A customer with a few VPSes (resellers with a hundred are among them)."""

    weight = 20
    wait_time = between(1, 3)

    def on_start(self):
        close_after_each(self)
        self.username, self.veids = random.choice(list(SEEDED["customers"].items()))
        sign_in(self, self.username, SEEDED["password"])

    def _veid(self):
        return random.choice(self.veids)

    @task(4)
    def home(self):
        self.client.get("/", name="portal: home")

    @task(4)
    def vps_page(self):
        self.client.get(f"/vps/{self._veid()}/", name="portal: /vps/[veid]/")

    @task(2)
    def vps_live_part(self):
        self.client.get(f"/vps/{self._veid()}/live/", name="portal: /vps/[veid]/live/")

    @task(6)
    def graphs(self):
        span = random.choice(_ranges)
        self.client.get(f"/api/v1/environments/{self._veid()}/usage/?range={span}",
                        name=f"api: usage {span}")

    @task(2)
    def api_list(self):
        self.client.get("/api/v1/environments/", name="api: environments")

    @task(1)
    def api_operations(self):
        self.client.get(f"/api/v1/operations/?environment__veid={self._veid()}",
                        name="api: operations of a VPS")

    @task(1)
    def reboot(self):
        veid = self._veid()
        page = self.client.get(f"/vps/{veid}/", name="portal: /vps/[veid]/")
        token = CSRF.search(page.text)
        with self.client.post(f"/vps/{veid}/reboot/", {"csrfmiddlewaretoken":
                                                       token.group(1) if token else ""},
                              name="portal: reboot (post)", allow_redirects=False,
                              catch_response=True) as answer:
            # 409: still busy with the last one (the page says so): an answer, not an error
            if answer.status_code in (302, 409):
                answer.success()

    @task(1)
    def order(self):
        with self.client.get("/order/", name="portal: order", catch_response=True) as page:
            token = _csrf(page)
        hostname = f"lt-{uuid.uuid4().hex[:12]}.example.com"
        with self.client.post("/order/", {
                "csrfmiddlewaretoken": token, "plan": random.choice(SEEDED["plans"]),
                "template": random.choice(SEEDED["templates"]), "hostname": hostname,
                "root_password": "order-pass-123"},
                name="portal: order (post)", allow_redirects=False,
                catch_response=True) as answer:
            if answer.status_code != 302:
                found = ORDER_ERRORS.search(answer.text)
                errors = re.sub(r"<[^>]+>|\s+", " ", found.group(1)).strip() if found else ""
                answer.failure(f"order answered {answer.status_code}: {errors}")
                return
            veid = int(answer.headers["Location"].rstrip("/").rsplit("/", 1)[1])
            self.veids = [*self.veids, veid]


class Staff(HttpUser):
    """Support and administrators: lists, the VPS pages, the overcommit report."""

    weight = 2
    wait_time = between(2, 5)

    def on_start(self):
        close_after_each(self)
        staff_sign_in(self)

    @task(3)
    def vps_list(self):
        self.client.get(f"/staff/vps/?page={random.randint(1, 20)}", name="staff: vps list")

    @task(1)
    def vps_search(self):
        self.client.get(f"/staff/vps/?q=c{random.randrange(2000)}", name="staff: vps search")

    @task(2)
    def vps_page(self):
        self.client.get(f"/vps/{random.choice(ALL_VEIDS)}/", name="staff: /vps/[veid]/")

    @task(1)
    def customers(self):
        self.client.get("/staff/customers/", name="staff: customers")

    @task(1)
    def operations(self):
        self.client.get("/staff/operations/", name="staff: operations")

    @task(1)
    def nodes(self):
        self.client.get("/staff/nodes/", name="staff: nodes")

    @task(1)
    def overcommit(self):
        self.client.get("/staff/reports/overcommit/?days=30", name="staff: overcommit 30 d")


class Billing(HttpUser):
    """A billing system: polls finished operations and reads VPSes with its API key."""

    weight = 1
    wait_time = between(1, 2)

    def on_start(self):
        close_after_each(self)
        self.client.headers["Authorization"] = f"Token {SEEDED['staff']['billing_key']}"

    @task(3)
    def operations(self):
        self.client.get("/api/v1/operations/?state=succeeded", name="api: operations (billing)")

    @task(1)
    def operations_of_one(self):
        self.client.get(f"/api/v1/operations/?environment__veid={random.choice(ALL_VEIDS)}",
                        name="api: operations of a VPS (billing)")

    @task(1)
    def environments(self):
        self.client.get(f"/api/v1/environments/?page={random.randint(1, 50)}",
                        name="api: environments (billing)")

    @task(1)
    def environment(self):
        self.client.get(f"/api/v1/environments/{random.choice(ALL_VEIDS)}/",
                        name="api: environment (billing)")


class Prometheus(HttpUser):
    """One scraper of /metrics every 15 s, with a staff session."""

    weight = 1
    fixed_count = 1
    wait_time = between(15, 15)

    def on_start(self):
        close_after_each(self)
        staff_sign_in(self)

    @task
    def scrape(self):
        self.client.get("/metrics", name="metrics")


@events.test_start.add_listener
def _count_after_warm_up(environment, **_):
    """Forget what was measured while users were still signing in (a password hash each,
    on purpose slow): the step counts from LOADTEST_WARMUP seconds on."""
    import gevent

    def reset():
        gevent.sleep(float(os.environ.get("LOADTEST_WARMUP", "0")))
        environment.stats.reset_all()
    gevent.spawn(reset)
