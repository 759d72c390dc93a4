"""Why an action cannot be asked of a VPS now, as the pages show it on a disabled
button: the very table the service refuses by (409), so a button is enabled exactly
when the request would be accepted."""

from hosting.operations.services import ACTION_STATES


def refusal(ve, current, kind):
    """Why ``kind`` cannot be asked of ``ve`` now ("" if it can), as the service judges."""
    if current is not None:
        return f"wait: {current.get_kind_display().lower()} is {current.state}"
    if ve.actual_state not in ACTION_STATES[kind][0]:
        return f"not while the VPS is {ve.get_actual_state_display().lower()}"
    return ""
