"""Staff pages: customers, and suspending or restoring them."""

from django.contrib import messages
from django.db.models import Sum
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from hosting.core.decorators import staff_required

from . import services
from .models import Customer


@staff_required("customers.view")
def customer_list(request):
    customers = Customer.objects.select_related("user").prefetch_related("environments") \
        .annotate(backup_bytes=Sum("environments__backup_bytes"))
    return render(request, "staff/customers.html", {"customers": customers})


@staff_required("customers.manage")
@require_POST
def customer_status(request, pk, status):
    customer = get_object_or_404(Customer, pk=pk)
    if status not in Customer.Status.values:
        return redirect("staff-customers")
    services.set_status(customer, status, request.user)
    messages.success(request, f"{customer} is now {status}.")
    return redirect("staff-customers")
