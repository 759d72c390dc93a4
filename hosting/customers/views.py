"""Staff pages: customers, and suspending or restoring them."""

from django.contrib import messages
from django.db.models import Count, Q, Sum
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from hosting.core.decorators import staff_required
from hosting.core.paging import page_of
from hosting.environments.models import VirtualEnvironment as VE

from . import services
from .models import Customer


@staff_required("customers.view")
def customer_list(request):
    customers = Customer.objects.select_related("user")
    if request.GET.get("q"):
        q = request.GET["q"]
        customers = customers.filter(Q(user__username__icontains=q) | Q(company__icontains=q))
    page = page_of(request, customers)
    page.object_list = _with_totals(list(page.object_list))
    return render(request, "staff/customers.html", {"page": page, "query": request.GET})


def _with_totals(customers):
    """Set ``environment_count`` and ``backup_bytes`` (their VPSes' backups) on the
    customers of a page, in one grouped query for the page."""
    totals = {row["owner"]: row for row in VE.objects.filter(owner__in=customers)
              .values("owner").annotate(count=Count("pk"), backup_bytes=Sum("backup_bytes"))}
    for customer in customers:
        row = totals.get(customer.pk, {})
        customer.environment_count = row.get("count", 0)
        customer.backup_bytes = row.get("backup_bytes") or 0
    return customers


@staff_required("customers.manage")
@require_POST
def customer_status(request, pk, status):
    customer = get_object_or_404(Customer, pk=pk)
    if status not in Customer.Status.values:
        return redirect("staff-customers")
    services.set_status(customer, status, request.user)
    messages.success(request, f"{customer} is now {status}.")
    return redirect("staff-customers")
