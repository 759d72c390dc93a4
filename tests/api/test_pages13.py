"""Issue 13 on the pages (Django's test client): graphs' time span, the density charts,
buttons that follow the state, IEC units, the what-if's wording, the order form's
errors all at once, the audit log's details, the favicon and the one median."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from hosting.core import audit
from hosting.environments.models import OSTemplate, VirtualEnvironment as VE
from hosting.operations.models import Operation
from hosting.usage import graphs, sampling
from hosting.usage.models import UsageSample

from .helpers import counts, text

pytestmark = pytest.mark.django_db


TERMINATE = '<button id="btn-terminate" class="danger" type="button" data-reveal="terminate-form">'


def _button(page, name):
    """The <button id="btn-NAME" ...> tag of ``page``, or None."""
    found = re.search(rf'<button id="btn-{name}"[^>]*>', page)
    return found and found.group(0)


# -- 1. one sample spans the period asked for, not years ------------------------------------

@pytest.mark.parametrize("range_name", list(graphs.RANGES))
def test_a_graph_of_one_sample_spans_exactly_the_period(world, range_name):
    now = timezone.now().replace(microsecond=0)
    UsageSample.objects.create(environment=world["ve_a"], time=now - timedelta(minutes=1),
                               ram=1 << 20, cpu_ns=0)
    out = graphs.usage(world["ve_a"], range_name, now=now)
    span = graphs.RANGES[range_name][0].total_seconds()
    assert (out["start"], out["end"]) == (now.timestamp() - span, now.timestamp())
    node = graphs.node_usage(world["node"], range_name, now=now)
    assert (node["start"], node["end"]) == (now.timestamp() - span, now.timestamp())


def test_the_graph_script_fixes_the_time_axis_to_the_period():
    from pathlib import Path
    script = (Path(__file__).resolve().parents[2] / "static/js/usage.js").read_text()
    # both uPlot charts (VPS and node) take the x range from start/end, not the samples
    assert script.count("scales: timeScale(data)") == 2
    assert "return [data.start, data.end];" in script


# -- 2. density at a glance ------------------------------------------------------------------

def test_the_overcommit_page_draws_each_node_and_the_fleet_by_headroom(world, page_as):
    from hosting.nodes.models import Node
    # empty nodes: their headroom is their risk level; hn1's two VPSes take some of its 80%
    Node.objects.create(name="hn0-tight", state="online", ram_bytes=1 << 30, cpus=1,
                        disk_bytes=10 << 30, risk_pct=50)
    Node.objects.create(name="hn2-roomy", state="online", ram_bytes=64 << 30, cpus=32,
                        disk_bytes=10 << 40, risk_pct=90)
    response = page_as("staff").get("/staff/reports/overcommit/?days=1")
    assert response.status_code == 200
    page = text(response)
    for name in ("hn1", "hn0-tight", "hn2-roomy"):
        svg = re.search(rf'<svg id="density-{name}".*?</svg>', page, re.S).group(0)
        bars = re.findall(r'data-resource="(\w+)" data-bar="(\w+)"', svg)
        assert bars == [(r, b) for r in ("ram", "cpu", "disk")
                        for b in ("physical", "sold", "p95", "peak")]
    hn1 = re.search(r'<svg id="density-hn1".*?</svg>', page, re.S).group(0)
    # 2 VPSes of 512 MiB sold on 8 GiB; nothing measured yet, so no p95
    assert 'data-resource="ram" data-bar="sold" data-value="1073741824"' in hn1
    assert 'data-resource="ram" data-bar="physical" data-value="8589934592"' in hn1
    assert 'data-resource="ram" data-bar="p95" data-value=""' in hn1
    fleet = re.search(r'<svg id="fleet-headroom".*?</svg>', page, re.S).group(0)
    order = re.findall(r'<g class="node" data-node="([^"]+)" data-headroom="([^"]*)"', fleet)
    # hn1: 3.2 of its 4 CPUs at 80%, less 2 unmeasured VPSes of all 4 CPUs each expected
    # at 80% / CPU ratio 4: 3.2 - 1.6 = 1.6 CPUs, 40% of physical (RAM leaves more)
    assert order == [("hn1", "0.4000"), ("hn0-tight", "0.5000"), ("hn2-roomy", "0.9000")]
    assert not re.search(r"\bGB\b", page)  # 4: IEC units only (a word: tokens may hold "GB")
    assert "<script" not in fleet and "http" not in fleet.replace("http://www.w3.org", "")


def test_the_node_csv_has_the_disk_figures_the_chart_draws(world, page_as):
    csv = page_as("staff").get("/staff/reports/overcommit/?format=csv&table=nodes")
    header = csv.content.decode().splitlines()[0].split(",")
    assert header[header.index("disk_overcommit") + 1:][:2] == ["disk_p95", "disk_peak"]


# -- 3. state and buttons follow what runs ----------------------------------------------------

def test_buttons_follow_a_running_vps(world, page_as):
    page = text(page_as("a").get(f"/vps/{world['ve_a'].veid}/"))
    assert _button(page, "start") == \
        '<button id="btn-start" disabled title="not while the VPS is running">'
    assert _button(page, "stop") == '<button id="btn-stop">'
    assert _button(page, "reboot") == '<button id="btn-reboot">'
    # Terminate shows the form asking for the password (outside the polled part)
    assert _button(page, "terminate") == TERMINATE
    assert _button(page, "suspend") is None  # staff only
    staff_page = text(page_as("staff").get(f"/vps/{world['ve_a'].veid}/"))
    assert _button(staff_page, "suspend") == '<button id="btn-suspend">'
    assert _button(staff_page, "resume") == \
        '<button id="btn-resume" disabled title="not while the VPS is running">'


def test_while_a_reboot_runs_every_page_says_rebooting_and_no_button_is_live(world, page_as):
    ve = world["ve_a"]
    Operation.objects.create(environment=ve, kind=Operation.Kind.RESTART,
                             state=Operation.State.RUNNING, requested_by=world["a"].user)
    client = page_as("a")
    listing = text(client.get("/"))
    assert '<span class="state creating">Rebooting…</span>' in listing
    assert ">Running<" not in listing
    for url in (f"/vps/{ve.veid}/", f"/vps/{ve.veid}/live/"):
        page = text(client.get(url))
        assert '<span class="state running" id="ve-state">Rebooting…</span>' in page
        for name in ("start", "stop", "reboot", "terminate"):
            assert 'disabled title="wait: reboot is running"' in _button(page, name), name
    detail = text(client.get(f"/vps/{ve.veid}/"))
    assert 'id="btn-reinstall" disabled title="wait: reboot is running"' in detail
    assert 'id="btn-password" disabled title="wait: reboot is running"' in detail
    # and the server refuses as clearly, with 409
    before = counts()
    refused = client.post(f"/vps/{ve.veid}/stop/")
    assert refused.status_code == 409
    assert "VPS web-a.example.com is busy" in text(refused) or \
        "reboot" in text(refused).lower()
    assert counts() == before


def test_the_staff_list_says_rebooting_too(world, page_as):
    ve = world["ve_a"]
    Operation.objects.create(environment=ve, kind=Operation.Kind.RESTART,
                             state=Operation.State.RUNNING, requested_by=world["a"].user)
    listing = text(page_as("staff").get("/staff/vps/"))
    row = re.search(rf"<tr>(?:(?!</tr>).)*{ve.hostname}.*?</tr>", listing, re.S).group(0)
    assert '<span class="state creating">Rebooting…</span>' in row
    assert ">Running<" not in row


def test_a_creating_vps_offers_only_terminate(world, page_as):
    VE.objects.filter(pk=world["ve_a"].pk).update(actual_state=VE.State.CREATING)
    page = text(page_as("a").get(f"/vps/{world['ve_a'].veid}/"))
    for name in ("start", "stop", "reboot"):
        assert _button(page, name) == \
            f'<button id="btn-{name}" disabled title="not while the VPS is creating">'
    # Terminate shows the form asking for the password (outside the polled part)
    assert _button(page, "terminate") == TERMINATE


def test_a_destroyed_vps_has_no_buttons_and_actions_answer_409(world, page_as):
    VE.objects.filter(pk=world["ve_a"].pk).update(actual_state=VE.State.DESTROYED)
    client = page_as("staff")
    page = text(client.get(f"/vps/{world['ve_a'].veid}/"))
    assert 'id="actions"' not in page and _button(page, "start") is None
    before = counts()
    response = client.post(f"/vps/{world['ve_a'].veid}/start/")
    assert response.status_code == 409
    assert "cannot start VPS web-a.example.com: it has been terminated" in text(response)
    assert counts() == before


def test_starting_a_running_vps_is_refused_with_409_and_the_reason(world, page_as):
    response = page_as("a").post(f"/vps/{world['ve_a'].veid}/start/")
    assert response.status_code == 409
    assert "cannot start VPS web-a.example.com: it is already running" in text(response)


# -- 4. units -----------------------------------------------------------------------------

def test_the_vps_page_shows_traffic_in_iec_units(world, page_as):
    page = text(page_as("a").get(f"/vps/{world['ve_a'].veid}/"))
    assert re.search(r'Traffic this month: 0 B\s+\(in 0 B, out 0 B\)', page)
    from hosting.usage.templatetags.report_format import iec
    assert [iec(v) for v in (0, 1023, 1024, 1536, 8 << 30, 3 << 40)] == \
        ["0 B", "1023 B", "1.0 KiB", "1.5 KiB", "8.0 GiB", "3.0 TiB"]


def test_the_plan_form_labels_sizes_in_iec_units(world, page_as):
    page = text(page_as("staff").get(f"/staff/plans/{world['plan'].pk}/"))
    assert "MB/s" not in page and "MiB/s" in page


# -- 5. the drain what-if's wording --------------------------------------------------------

def test_draining_the_only_online_node_says_no_other_node(world, page_as):
    from hosting.usage import whatif
    result = whatif.drain(world["node"])
    assert result["unplaced"] == [("101 web-a.example.com", "no node other than hn1 is online"),
                                  ("102 web-b.example.com", "no node other than hn1 is online")]
    page = text(page_as("staff").get(
        f"/staff/reports/overcommit/?whatif=drain&node={world['node'].pk}"))
    assert '<td colspan="10" class="empty" id="whatif-nowhere">no node other than hn1 is ' \
           'online</td>' in page


def test_adding_with_no_node_online_says_no_node(world):
    from hosting.usage import whatif
    world["node"].state = "offline"
    world["node"].save()
    result = whatif.add(world["plan"], 1)
    assert result["unplaced"] == [("small #1", "no node is online")]


# -- 7. order form, audit log, favicon -------------------------------------------------------

def test_the_order_form_reports_every_error_at_once(world, page_as):
    alpine = OSTemplate.objects.create(name="alpine", title="Alpine")
    before = counts()
    response = page_as("a").post("/order/", {
        "plan": world["plan"].pk, "template": alpine.pk, "hostname": "web-b.example.com",
        "root_password": "short", "ssh_key": "ssh-rsa nope"})
    assert response.status_code == 400
    assert counts() == before
    page = text(response)
    summary = re.search(r'<div class="flash error" role="alert" id="order-errors">(.*?)</div>',
                        page, re.S).group(1)
    items = [re.sub(r"<[^>]+>", "", item).strip()
             for item in re.findall(r"<li>(.*?)</li>", summary, re.S)]
    assert items == [
        "OS template: plan small does not offer template alpine",
        "Host name: host name web-b.example.com is taken",
        "Root password: the root password needs at least 8 characters",
        "SSH public key: bad SSH key: paste one public key line such as "
        "'ssh-ed25519 AAAA... me@laptop'",
    ]
    assert "Please fix these 4 things:" in summary


def test_the_order_form_without_any_login_says_so_once(world, page_as):
    response = page_as("a").post("/order/", {
        "plan": world["plan"].pk, "template": world["template"].pk,
        "hostname": "fresh.example.com", "root_password": "", "ssh_key": ""})
    assert response.status_code == 400
    assert text(response).count("give a root password or an SSH key to log in with") == 2


def test_the_audit_log_shows_details_as_pairs_and_clips_long_values(world, page_as):
    long = "x" * 300
    audit.record(world["staff"], "test.detail", world["plan"], reason="too big",
                 changes={"ram_mb": "1024"}, blob=long)
    page = text(page_as("staff").get("/staff/audit/?action=test."))
    cell = re.search(r'<td class="detail">(.*?)</td>', page, re.S).group(1)
    assert "{'" not in cell
    assert '<span class="key">reason:</span> <code>too big</code>' in cell
    assert '<span class="key">changes:</span> <code>{"ram_mb": "1024"}</code>' in cell
    clipped = re.search(r'<summary class="clip" title="(x+)">(x+…)</summary>', cell)
    assert clipped.group(1) == long and len(clipped.group(2)) == 80
    assert f'<code class="full">{long}</code>' in cell


def test_the_favicon_is_served(client):
    response = client.get("/favicon.ico")
    assert (response.status_code, response["Location"]) == (301, "/static/favicon.svg")
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200
    assert b"".join(icon.streaming_content).startswith(b"<svg")


def test_every_page_links_the_icon_and_fits_a_phone(world, page_as):
    page = text(page_as("a").get("/"))
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert '<table class="list stack" id="vps-list">' in page


# -- 9. one median ------------------------------------------------------------------------

def test_one_median_for_the_whole_dashboard():
    from pathlib import Path
    assert sampling.median([]) is None
    assert sampling.median([3, 1, 2]) == 2
    assert sampling.median([4, 1, 3, 2]) == 2.5
    hosting = Path(__file__).resolve().parents[2] / "hosting"
    defined = [str(p.relative_to(hosting)) for p in hosting.rglob("*.py")
               if re.search(r"^def median\(|statistics\.median|percentile\([^)]*, 50\)",
                            p.read_text(), re.M)]
    assert defined == ["usage/sampling.py"]
