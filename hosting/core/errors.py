"""Errors the services raise; views and the API turn them into 4xx answers."""


class ServiceError(Exception):
    """A request the service refuses; ``status`` is the HTTP status to answer with."""

    status = 400

    def __init__(self, message, field=None):
        super().__init__(message)
        self.message = message
        self.field = field


class Invalid(ServiceError):
    """Bad input (unknown plan, taken host name...)."""


class Conflict(ServiceError):
    """The request clashes with the object's state: busy, already running, no capacity."""

    status = 409


class Forbidden(ServiceError):
    """The requester may not do this (suspended account, staff-only action)."""

    status = 403


class Unprocessable(ServiceError):
    """Well-formed but refused as it stands (an Idempotency-Key reused with another body)."""

    status = 422

    def __init__(self, message, field=None, code=None):
        super().__init__(message, field)
        self.code = code
