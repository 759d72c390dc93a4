"""Fuzzing the REST API with schemathesis (docs/fuzzing.md)."""
