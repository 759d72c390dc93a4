"""Field validators that refuse exactly what a node's engine would refuse."""

from django.core.exceptions import ValidationError

from ve import validate
from ve.errors import InvalidConfig


def _check(check, value):
    try:
        check(value)
    except InvalidConfig as exc:
        raise ValidationError(exc.message) from exc


def validate_veid(value):
    _check(validate.veid, value)


def validate_hostname(value):
    _check(validate.hostname, value)


def validate_template_name(value):
    _check(validate.template_name, value)
