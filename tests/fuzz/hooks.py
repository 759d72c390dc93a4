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

from hypothesis import strategies as st

# Which seeded ids an "{id}" in a path takes, by the path's first part after /api/v1/.
_ID_KIND = {"customers": "customer", "plans": "plan", "templates": "template",
            "nodes": "node", "ip-pools": "pool", "operations": "operation",
            "audit-log": "audit"}


def _kind(path, name):
    if name in ("veid", "address"):
        return name
    return _ID_KIND.get(path.split("/api/v1/", 1)[-1].split("/", 1)[0])


def lenient_coercion(failure):
    """A body scalar of the wrong JSON type that DRF took on purpose: a number for a string
    field ("phone": 0 is "0"), "on"/"yes"/1 for a boolean. Not counted as a failure."""
    return failure.code == "ST201" and "in body - " in failure.message \
        and failure.message.rstrip().endswith("Incorrect type")


def install(hook, ids):
    """Register the hooks with ``hook`` (``schemathesis.hook`` or a schema's ``.hook``)."""

    @hook
    def filter_failure(context, failure, case, response):
        return not lenient_coercion(failure)

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
