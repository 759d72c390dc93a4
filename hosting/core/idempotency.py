"""Idempotency-Key: the same key again replays the first request; with a changed body, 422.

The operation services already return the first operation for a key they
know. What they cannot tell is whether the retry is the *same* request: here
each key is kept with a fingerprint of the caller, route and body, and a
different fingerprint is refused instead of silently answered with the first
operation. The fingerprint is an HMAC under SECRET_KEY, not a plain hash: the
body may hold a root password, and a plain hash of it would be a fast
offline guess target for whoever reads the database.
"""

import hmac
import json

from django.db import IntegrityError, transaction
from django.utils.crypto import salted_hmac

from .errors import Invalid, Unprocessable
from .models import IdempotencyRecord

HEADER = "Idempotency-Key"
MAX_LENGTH = 100
REUSED = "idempotency_key_reused"


def key_of(request):
    """The request's Idempotency-Key, or None; Invalid if it is too long."""
    key = request.headers.get(HEADER)
    if key and len(key) > MAX_LENGTH:
        raise Invalid(f"{HEADER} is longer than {MAX_LENGTH} characters", field=HEADER)
    return key or None


def fingerprint(request):
    """A keyed hash of who sent what where (the body in a canonical form)."""
    data = request.data
    if hasattr(data, "lists"):  # a form body: a QueryDict
        data = {name: values if len(values) != 1 else values[0] for name, values in data.lists()}
    canonical = json.dumps({"user": request.user.pk, "method": request.method,
                            "path": request.path, "body": data},
                           sort_keys=True, separators=(",", ":"), default=str)
    return salted_hmac("hosting.idempotency", canonical, algorithm="sha256").hexdigest()


def _refuse():
    raise Unprocessable(f"this {HEADER} was already used for a different request; "
                        "send a new key for a new request", code=REUSED)


def run(request, call):
    """``call()`` (which makes the operation, or returns the one its key made before)
    under the request's key; Unprocessable (422) if the key was first used otherwise.

    One transaction: a request refused here leaves no operation behind, and of two
    racing requests with one key the second sees the first's record.
    """
    key = key_of(request)
    if key is None:
        return call(None)
    mine = fingerprint(request)
    with transaction.atomic():
        record = IdempotencyRecord.objects.filter(key=key).first()
        # First the service: a key of another VPS or action is its 409 (nothing made,
        # as the key's operation exists); a replay of the same action returns it.
        op = call(key)
        if record is not None and not hmac.compare_digest(record.fingerprint, mine):
            _refuse()  # same action, changed body (or caller): rolled back, if anything
        if record is None:
            try:
                with transaction.atomic():
                    IdempotencyRecord.objects.create(key=key, user=request.user,
                                                     fingerprint=mine, operation_id=op.pk)
            except IntegrityError:  # a concurrent request with this key committed first
                record = IdempotencyRecord.objects.get(key=key)
                if not hmac.compare_digest(record.fingerprint, mine):
                    _refuse()
    return op
