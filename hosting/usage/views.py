"""Staff pages: the overcommit and density report, also as CSV."""

import csv

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_POST

from hosting.core import roles
from hosting.core.decorators import staff_required
from hosting.core.errors import ServiceError
from hosting.nodes import rebalance
from hosting.nodes.models import Node, Rebalance
from hosting.plans.models import Plan

from . import capacity, charts, reports, whatif
from .period import REPORT_DAYS, Period

NODE_COLUMNS = ("node", "ves", "cpus", "ves_per_core", "ram_physical", "ram_sold",
                "ram_overcommit", "swap_sold", "swap_overcommit", "cpu_sold", "cpu_overcommit",
                "disk_physical", "disk_sold", "disk_overcommit", "disk_p95", "disk_peak",
                "backup_bytes", "ram_p95", "ram_peak",
                "ram_p95_of_physical", "cpu_p95", "cpu_peak", "cpu_p95_of_physical",
                "ram_coincidence", "cpu_coincidence", "risk_pct", "headroom_ram",
                "headroom_cpu")
RUNWAY_COLUMNS = ("node", "ram_days", "disk_days", "sales_days", "sales_limit")
SIGNAL_COLUMNS = ("veid", "hostname", "plan", "node", "signal", "detail")
EPISODE_COLUMNS = ("node", "resource", "start_time", "hours", "peak", "driver_text")
PLAN_COLUMNS = ("plan", "ves", "measured", "ram_p95_share", "cpu_p95_share", "disk_used_share")
DAYS = REPORT_DAYS  # hourly housekeeping stores the figures of these (tasks.py)
WHATIF_FIGURES = ("ves", "ram_overcommit", "cpu_overcommit", "disk_overcommit", "ram_use",
                  "cpu_use", "headroom_ram", "headroom_cpu")
WHATIF_COLUMNS = ("node", "added") + tuple(f"{when}_{figure}" for figure in WHATIF_FIGURES
                                          for when in ("before", "after"))


@staff_required("reports.view")
def overcommit(request):
    """Per node and per plan, what was sold next to what is used (``?format=csv&table=``)."""
    days = int(request.GET.get("days", "30")) if request.GET.get("days") in map(str, DAYS) \
        else 30
    question, asked, error = _whatif(request.GET)
    if request.GET.get("format") == "csv":
        if request.GET.get("table") in ("whatif", "placements"):
            if asked is None:
                return _bad(error or "ask a what-if: whatif=add&plan=&count= or "
                                     "whatif=drain&node=")
            return _whatif_csv(request.GET["table"], asked)
        return _table_csv(request.GET.get("table", "nodes"), days)
    period = Period(days, stand_in=True)  # each figure aggregated once for all the tables
    profile = capacity.measure(period=period)
    plans = reports.plan_report(profile=profile, period=period)
    nodes = reports.node_report(profile=profile, period=period)
    fit_plans = sorted({p for row in nodes for p in row["fits"]})
    for row in nodes:
        row["fit_list"] = [row["fits"][p] for p in fit_plans]
        row["chart"] = charts.density(row)
    return render(request, "staff/overcommit.html", {
        "nodes": nodes, "plans": plans, "fleet_chart": charts.fleet(nodes) if nodes else "",
        "by_headroom": charts.by_headroom(nodes), "days": days, "day_choices": DAYS,
        "fit_plans": fit_plans, "signals": reports.rightsizing(),
        "runway": reports.runway(period=period), "episodes": _episodes(period),
        "whatif": asked, "whatif_error": error, "question": question,
        "all_plans": Plan.objects.filter(active=True), "all_nodes": Node.objects.all(),
        "placement_profile": capacity.stored(), **_rebalancing(request.user)})


def _rebalancing(viewer):
    """The Rebalancing card: the plan from placement's figures and the recent runs."""
    recent = list(Rebalance.objects.select_related("requested_by")[:5])
    for batch in recent:
        batch.rows = rebalance.progress(batch)
    return {"rebalance_plan": rebalance.plan(), "rebalances": recent,
            "may_rebalance": roles.can(viewer, "nodes.manage")}


@staff_required("nodes.manage")
@require_POST
def rebalance_apply(request):
    """Apply the rebalancing plan now, or schedule it (``run_at``, the server's time)."""
    try:
        run_at = _moment(request.POST.get("run_at", ""))
        batch = rebalance.apply(request.user, run_at, request.POST.get("parallel") or 2)
    except (ServiceError, ValueError) as exc:
        messages.error(request, f"Not applied: {getattr(exc, 'message', exc)}")
    else:
        when = "now" if batch.run_at <= timezone.now() else \
            f"at {timezone.localtime(batch.run_at):%Y-%m-%d %H:%M}"
        messages.success(request, f"Rebalancing {when}, {batch.parallel} moves at a time.")
    return redirect(reverse("staff-overcommit") + "#rebalancing")


@staff_required("nodes.manage")
@require_POST
def rebalance_cancel(request, pk):
    try:
        rebalance.cancel(get_object_or_404(Rebalance, pk=pk), request.user)
    except ServiceError as exc:
        messages.error(request, exc.message)
    return redirect(reverse("staff-overcommit") + "#rebalancing")


def _moment(text):
    """An aware datetime from a datetime-local field (blank: None, i.e. now)."""
    if not text.strip():
        return None
    moment = parse_datetime(text.strip())
    if moment is None:
        raise ValueError("the time is not a date and time")
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def _whatif(params):
    """(question, result, error) of the what-if ``params`` ask; all None if none."""
    kind = params.get("whatif")
    if not kind:
        return None, None, None
    try:
        if kind == "add":
            plan = Plan.objects.filter(pk=_number(params.get("plan"))).first()
            if plan is None:
                raise whatif.Refused("choose a plan")
            count = _number(params.get("count"))
            return f"{count} more VPSes of plan {plan.name}", whatif.add(plan, count), None
        if kind == "drain":
            node = Node.objects.filter(pk=_number(params.get("node"))).first()
            if node is None:
                raise whatif.Refused("choose a node")
            return f"drain node {node.name}", whatif.drain(node), None
        raise whatif.Refused("a what-if is whatif=add or whatif=drain")
    except whatif.Refused as exc:
        return None, None, str(exc)


def _number(text):
    try:
        return int(text or "")
    except ValueError:
        raise whatif.Refused(f"not a whole number: {text!r}") from None


def _whatif_csv(table, asked):
    if table == "placements":
        rows = [{"vps": label, "node": node, "why_not": ""} for label, node in asked["placed"]]
        rows += [{"vps": label, "node": "", "why_not": why} for label, why in asked["unplaced"]]
        return _csv("whatif-placements.csv", ("vps", "node", "why_not"), rows, [])
    rows = [dict({"node": n["node"], "added": n["added"]},
                 **{f"{when}_{figure}": n[when][figure] for figure in WHATIF_FIGURES
                    for when in ("before", "after")}) for n in asked["nodes"]]
    return _csv("whatif-nodes.csv", WHATIF_COLUMNS, rows, [])


def _bad(message):
    return HttpResponse(message + "\n", status=400, content_type="text/plain")


def _table_csv(table, days):
    """One report table as CSV (only that one is computed)."""
    if table == "rightsizing":
        return _csv("rightsizing.csv", SIGNAL_COLUMNS, reports.rightsizing(), [])
    if table == "runway":
        return _csv(f"runway-{days}d.csv", RUNWAY_COLUMNS, reports.runway(days), [])
    if table == "plans":
        return _csv(f"overcommit-plans-{days}d.csv", PLAN_COLUMNS, reports.plan_report(days), [])
    if table == "nodes":
        nodes = reports.node_report(days)
        return _csv(f"overcommit-nodes-{days}d.csv", NODE_COLUMNS, nodes,
                    sorted({p for row in nodes for p in row["fits"]}))
    if table == "episodes":
        return _csv(f"pressure-episodes-{days}d.csv", EPISODE_COLUMNS,
                    _episodes(Period(days, stand_in=True)), [])
    return _bad("table must be nodes, plans, rightsizing, runway, episodes, whatif or "
                "placements")


def _episodes(period):
    """Pressure episodes with readable times and drivers, for the page."""
    from datetime import datetime, timezone
    rows = reports.noisy_neighbours(period=period)
    for row in rows:
        row["start_time"] = datetime.fromtimestamp(row["start"], timezone.utc)
        row["driver_text"] = ", ".join(f"{d['veid']} {d['hostname']} ({d['share']:.0%})"
                                       for d in row["drivers"])
    return rows


def _csv(filename, columns, rows, fit_plans):
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerow(list(columns) + [_cell(f"fits_{p}") for p in fit_plans])
    for row in rows:
        writer.writerow([_cell(row[c]) for c in columns] +
                        [row["fits"].get(p, "") for p in fit_plans])
    return response


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value  # a spreadsheet must not run a staff-named plan as a formula
    return value
