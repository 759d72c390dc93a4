"""How long the engine's verbs wait, in seconds (callers may pass their own)."""

LOCK_TIMEOUT = 30.0  # for another action on the same VE to let go of it
STOP_TIMEOUT = 30.0  # for a VE's init to shut down cleanly before it is killed
