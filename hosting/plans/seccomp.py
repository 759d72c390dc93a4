"""The seccomp relaxation a plan or a VPS may have: names, checks, form and API fields.

Values are stored as the names staff chose (groups such as ``keyring`` stay
groups, so the pages read as they were set), space separated and sorted; ""
is the full filter. The engine's own policy (``ve.syscalls``) says which
names exist and which may never be relaxed; the engine checks again.
"""

from django import forms
from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ve import syscalls

# Groups first (what staff usually pick), then the single calls inside them.
GROUPS = tuple(sorted(syscalls.RELAXABLE))
CALLS = tuple(sorted({c for calls in syscalls.RELAXABLE.values() for c in calls} - set(GROUPS)))
NAMES = GROUPS + CALLS
CHOICES = [(g, f"{g} ({', '.join(syscalls.RELAXABLE[g])})") for g in GROUPS] + \
    [(c, c) for c in CALLS]
HELP = ("system calls the VE's seccomp filter denies that it may make (groups or single "
        "calls); empty = the full filter. Applies at the VE's next start or reboot")


def split(value):
    """The names in ``value`` (a string, comma or space separated, or a list)."""
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    return list(value or ())


def normalize(value):
    """``value`` checked and as stored: unique names, sorted, space separated ("" = none).

    Raises ValidationError naming what is unknown or may never be relaxed.
    """
    names = split(value)
    if any(not isinstance(n, str) for n in names):
        raise ValidationError("give names of calls or groups")
    names = sorted(set(names) - {"none"})
    try:
        syscalls.allow_names(names)
    except ValueError as exc:
        raise ValidationError(str(exc), code="invalid") from None
    return " ".join(names)


def validate(value):
    """Model field validator (see normalize)."""
    normalize(value)


def calls(value):
    """The system calls ``value`` relaxes, as the engine keeps them (a sorted tuple)."""
    return syscalls.allow_names(split(value)) if split(value) else ()


class FormField(forms.MultipleChoiceField):
    """Check boxes for the staff pages; cleans to the stored string."""

    widget = forms.CheckboxSelectMultiple

    def __init__(self, **kwargs):
        kwargs.setdefault("choices", CHOICES)
        kwargs.setdefault("required", False)
        kwargs.setdefault("help_text", HELP)
        super().__init__(**kwargs)

    def prepare_value(self, value):
        return split(value) if isinstance(value, str) else value

    def to_python(self, value):
        # a disabled field cleans its initial value: the stored string
        return super().to_python(split(value) if isinstance(value, str) else value)

    def has_changed(self, initial, data):
        return super().has_changed(self.prepare_value(initial), data)

    def clean(self, value):
        return normalize(super().clean(value))


# A list of names. (Not also vectl's comma-separated string: one JSON type per field,
# and a schema with two branches was fuzzed as if either branch alone were the schema.)
@extend_schema_field({"type": "array", "items": {"type": "string", "enum": list(NAMES)},
                      "maxItems": len(NAMES)})
class ApiField(serializers.ListField):
    """A list of names in the API (``[]`` = the full filter); stored as the string.

    The names are checked by ``normalize`` rather than as choices, so a call
    that may never be relaxed is refused with the engine's reason.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("child", serializers.CharField(max_length=40))
        kwargs.setdefault("help_text", HELP)
        super().__init__(**kwargs)

    def to_representation(self, value):
        return split(value)

    def to_internal_value(self, data):
        if isinstance(data, str):
            raise serializers.ValidationError(
                'A list of names is expected, e.g. ["keyring", "io_uring"]; [] for none.')
        # Counted here, not by ListField's max_length: its validator runs after
        # normalize, on the stored string, and so let 14 copies of "bpf" through.
        if isinstance(data, (list, tuple)) and len(data) > len(NAMES):
            raise serializers.ValidationError(
                f"At most {len(NAMES)} names; {len(data)} were given.")
        try:
            names = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            # ListField keys its items' errors by index ({"0": [...]}); the API's
            # errors for a field are a list of messages.
            detail = exc.detail
            if isinstance(detail, dict):
                detail = [f"item {index}: {message}" for index, messages in detail.items()
                          for message in messages]
            raise serializers.ValidationError(detail) from None
        try:
            return normalize(names)
        except ValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None
