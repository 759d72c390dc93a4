"""Schemathesis hooks of the fuzz runs: path parameters are often ids that exist.

Drawn at random, a VEID or a plan id almost never names a row, and the fuzzer would
test little but 404s. Half the time a path parameter is taken from the ids seed_fuzz
made instead (VPSes of both customers, plans, nodes, ...), so the views behind the
lookups get fuzzed bodies and queries too. The CLI loads this module through
SCHEMATHESIS_HOOKS (the ids from the JSON file in FUZZ_SEEDED); tests/api/test_fuzz.py
calls ``install`` on its schema.
"""

import json
import os
import re

from hypothesis import strategies as st

# Which seeded ids an "{id}" in a path takes, by the path's first part after /api/v1/.
_ID_KIND = {"customers": "customer", "plans": "plan", "templates": "template",
            "nodes": "node", "ip-pools": "pool", "operations": "operation",
            "audit-log": "audit"}


def _kind(path, name):
    if name in ("veid", "address"):
        return name
    return _ID_KIND.get(path.split("/api/v1/", 1)[-1].split("/", 1)[0])


# Deletes that keep the resource readable on purpose: a plan is retired, never deleted
# (staff still read it, with active false); a VPS's DELETE answers 202 with the
# terminate operation, and the VPS stays until a node has carried it out.
SOFT_DELETES = re.compile(r"DELETE /api/v1/(plans|environments)/[^/]+/$")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
# schemathesis's two ways of saying "a scalar of another scalar type was taken".
SCALAR = "(string|number|integer|boolean)"
REPEATED = re.compile(r"parameter `[^`]+` in query - violates `type` at \S+ "
                      r"\(was \w+, became array\)$")
COERCED = re.compile(r"in body - (.*: Incorrect type$|.*violates `type` at \S+ "
                     rf"\(was {SCALAR}, became {SCALAR}\)$)")


def accepted_by_design(failure, case):
    """Failures of behaviour the API has on purpose (docs/fuzzing.md), not counted:

    - a body scalar of another scalar JSON type that DRF converts: a number for a string
      field ("phone": 0 is "0"), "12" for an integer, "on"/"yes"/1 for a boolean (DRF
      refuses null, objects and arrays there, and booleans for strings);
    - a query parameter given more than once (?owner=1&owner=2): the last one counts,
      as everywhere in Django;
    - a form body that is no object (raw bytes as multipart): the server reads an
      empty form, which a PATCH may well be;
    - a retired plan or a VPS being terminated still readable after its DELETE.
    """
    message = failure.message.rstrip()
    if failure.code == "ST201" and "in body - " in message:
        return bool(COERCED.search(message)) or (
            "in body - violates `type` (" in message and case.media_type in FORM_TYPES)
    if failure.code == "ST201" and REPEATED.search(message):
        return True
    if failure.code == "ST301":
        return bool(SOFT_DELETES.match(getattr(failure, "free", "")))
    return False


def install(hook, ids):
    """Register the hooks with ``hook`` (``schemathesis.hook`` or a schema's ``.hook``)."""

    @hook
    def filter_failure(context, failure, case, response):
        return not accepted_by_design(failure, case)

    @hook
    def before_generate_path_parameters(context, strategy):
        operation = context.operation
        names = [p.name for p in operation.path_parameters]
        known = {}
        for name in names:
            values = ids.get(_kind(operation.path, name) or "", [])
            if not values:
                return strategy
            known[name] = st.sampled_from(values)
        return st.one_of(strategy, st.fixed_dictionaries(known))


if os.environ.get("FUZZ_SEEDED"):
    import schemathesis

    with open(os.environ["FUZZ_SEEDED"]) as _f:
        install(schemathesis.hook, json.load(_f)["ids"])
