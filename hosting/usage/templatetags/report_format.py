"""Formats for the dashboard's pages: ratios, shares and sizes, a dash for no data.

Sizes are binary (IEC: KiB, MiB, GiB, TiB), as memory and disk are measured and
sold; Django's filesizeformat divides by 1024 too but labels it "GB", so it is
not used anywhere.
"""

from django import template

register = template.Library()

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def iec(value):
    """``value`` bytes as "512 B", "1.5 KiB", ..., "2.0 TiB" (powers of 1024)."""
    value = float(value)
    if abs(value) < 1024:
        return f"{value:.0f} B"
    for unit in _UNITS:
        value /= 1024
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"


@register.filter
def ratio(value):
    return "—" if value is None else f"×{value:.2f}"


@register.filter
def share(value):
    return "—" if value is None else f"{100 * value:.0f}%"


@register.filter
def size(value):
    """Bytes in IEC units; a dash for no data."""
    return "—" if value is None or value == "" else iec(value)


@register.filter
def days(value):
    return "not running out" if value is None else f"{value:.0f} days"


@register.filter
def cpus(value):
    return "—" if value is None else f"{value:.2f}"


SHORT = 80  # characters of a value shown inline; longer ones open on demand


@register.filter
def pairs(detail):
    """An audit row's detail as [(key, text, is_long)]: text for people, not Python reprs
    (nested values as JSON)."""
    import json
    if detail in (None, "", {}):
        return []
    items = detail.items() if isinstance(detail, dict) else [("", detail)]
    out = []
    for key, value in items:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                               sort_keys=True, default=str)
        out.append((key, text, len(text) > SHORT))
    return out
