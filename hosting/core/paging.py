"""Staff lists come a page at a time: a fleet's thousands of rows never render at once."""

from django.core.paginator import Paginator

PAGE_SIZE = 50


def page_of(request, queryset, size=None):
    """The page of ``queryset`` the request's ``page`` parameter asks for (the last page
    for a number past it, the first for anything else), as a Django ``Page`` of ``size``
    rows (default PAGE_SIZE)."""
    return Paginator(queryset, size or PAGE_SIZE).get_page(request.GET.get("page"))
