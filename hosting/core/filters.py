"""List filters whose numbers are checked: a value the database cannot hold is a 400.

Every filterset of the API derives from ``BoundedFilterSet`` (the filter
backend makes the ones built from ``filterset_fields`` do so too). A number
filter over an integer column takes whole numbers only, within the column's
range (ids and VEIDs from 1), so ``?owner=99999999999999999999``, ``1e30`` or
``nan`` are refused with a message instead of overflowing in the database.
A boolean filter takes true/false (or 1/0): ``?active=maybe`` is a 400 too, where
django-filter would quietly not filter at all.
"""

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db import connection, models
from django_filters.rest_framework import DjangoFilterBackend
from django_filters.utils import get_model_field
from drf_spectacular.drainage import set_override

# Above any id the dashboard makes, and below what SQLite and PostgreSQL's bigint hold.
MAX_ID = 2**63 - 1


def integer_range(model_field):
    """(min, max) a filter on ``model_field`` may ask for, or None if it is no integer."""
    if isinstance(model_field, models.ForeignKey):
        model_field = model_field.target_field
    if not isinstance(model_field, (models.IntegerField, models.AutoField)):
        return None
    low, high = connection.ops.integer_field_range(model_field.get_internal_type())
    if isinstance(model_field, models.AutoField) or model_field.primary_key \
            or model_field.name == "veid":
        low = 1  # identifiers start at 1: a smaller one is a mistake, not a miss
    return (1 if low is None else low), (MAX_ID if high is None else high)


class StrictBooleanField(forms.NullBooleanField):
    """true/false, True/False or 1/0; absent or empty is no filter, anything else an error."""

    widget = forms.TextInput  # the raw value: django-filter's widget maps junk to "no filter"

    def to_python(self, value):
        value = value.lower() if isinstance(value, str) else value
        if value in (None, ""):
            return None
        if value in (True, "true", "1"):
            return True
        if value in (False, "false", "0"):
            return False
        raise ValidationError("must be true or false", code="invalid")

    def validate(self, value):
        pass


class BoundedFilterSet(django_filters.FilterSet):
    """A FilterSet whose integer filters are whole numbers within their column's range."""

    @classmethod
    def get_filters(cls):
        # Called once per class, as the class is made: bound its filters there, so
        # the schema (which reads the class) shows them as bounded integers too.
        filters = super().get_filters()
        for flt in filters.values():
            if isinstance(flt, django_filters.BooleanFilter):
                flt.field_class = StrictBooleanField
                flt.extra["widget"] = forms.TextInput
                flt.__dict__.pop("_field", None)
                continue
            if not isinstance(flt, django_filters.NumberFilter) or cls._meta.model is None:
                continue
            bounds = integer_range(get_model_field(cls._meta.model, flt.field_name))
            if bounds is not None:
                flt.field_class = forms.IntegerField
                flt.extra.setdefault("min_value", bounds[0])
                flt.extra.setdefault("max_value", bounds[1])
                flt.__dict__.pop("_field", None)  # a form field made before is stale
                set_override(flt, "field", {"type": "integer", "minimum": bounds[0],
                                            "maximum": bounds[1]})
        return filters


class FilterBackend(DjangoFilterBackend):
    """DRF's django-filter backend, with ``BoundedFilterSet`` for ``filterset_fields``."""

    filterset_base = BoundedFilterSet

    def get_filterset_class(self, view, queryset=None):
        filterset_class = super().get_filterset_class(view, queryset)
        if filterset_class is not None and not issubclass(filterset_class, BoundedFilterSet):
            raise TypeError(f"{filterset_class.__name__} must derive from BoundedFilterSet "
                            "(hosting.core.filters): its numbers are unchecked")
        return filterset_class
