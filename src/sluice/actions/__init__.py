"""Action rules, the outbox and its dispatcher (see ``actions/base.py`` for the contract)."""

KEY_WIDTH = 40  # characters of an idempotency key, first in a stored key
