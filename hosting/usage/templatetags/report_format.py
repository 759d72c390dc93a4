"""Formats for the report pages: ratios, shares and sizes, a dash for no data."""

from django import template
from django.template.defaultfilters import filesizeformat

register = template.Library()


@register.filter
def ratio(value):
    return "—" if value is None else f"×{value:.2f}"


@register.filter
def share(value):
    return "—" if value is None else f"{100 * value:.0f}%"


@register.filter
def size(value):
    return "—" if value is None else filesizeformat(value)


@register.filter
def days(value):
    return "not running out" if value is None else f"{value:.0f} days"


@register.filter
def cpus(value):
    return "—" if value is None else f"{value:.2f}"
