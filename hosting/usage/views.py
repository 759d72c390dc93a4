"""Staff pages: the overcommit and density report, also as CSV."""

import csv

from django.http import HttpResponse
from django.shortcuts import render

from hosting.core.decorators import staff_required

from . import reports

NODE_COLUMNS = ("node", "ves", "cpus", "ves_per_core", "ram_physical", "ram_sold",
                "ram_overcommit", "swap_sold", "swap_overcommit", "cpu_sold", "cpu_overcommit",
                "disk_physical", "disk_sold", "disk_overcommit", "ram_p95", "ram_peak",
                "ram_p95_of_physical", "cpu_p95", "cpu_peak", "cpu_p95_of_physical",
                "ram_coincidence", "cpu_coincidence", "risk_pct", "headroom_ram",
                "headroom_cpu")
RUNWAY_COLUMNS = ("node", "ram_days", "disk_days", "sales_days")
SIGNAL_COLUMNS = ("veid", "hostname", "plan", "node", "signal", "detail")
PLAN_COLUMNS = ("plan", "ves", "measured", "ram_p95_share", "cpu_p95_share", "disk_used_share")
DAYS = (1, 7, 30)


@staff_required
def overcommit(request):
    """Per node and per plan, what was sold next to what is used (``?format=csv&table=``)."""
    days = int(request.GET.get("days", "30")) if request.GET.get("days") in map(str, DAYS) \
        else 30
    if request.GET.get("format") == "csv":
        return _table_csv(request.GET.get("table", "nodes"), days)
    plans = reports.plan_report(days)
    nodes = reports.node_report(days, plan_rows=plans)
    fit_plans = sorted({p for row in nodes for p in row["fits"]})
    for row in nodes:
        row["fit_list"] = [row["fits"][p] for p in fit_plans]
    return render(request, "staff/overcommit.html", {
        "nodes": nodes, "plans": plans, "days": days, "day_choices": DAYS,
        "fit_plans": fit_plans, "signals": reports.rightsizing(),
        "runway": reports.runway(days), "episodes": _episodes(days)})


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
    return HttpResponse("table must be nodes, plans, rightsizing or runway\n", status=400,
                        content_type="text/plain")


def _episodes(days):
    """Pressure episodes with readable times and drivers, for the page."""
    from datetime import datetime, timezone
    rows = reports.noisy_neighbours(days)
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
