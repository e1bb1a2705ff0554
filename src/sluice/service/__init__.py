"""The composition root: builds a running system from api, runners, orchestration and actions.

Only this package (and the CLI above it) knows every layer; lower layers get what they need
from here as arguments (the ``job_runner`` of ``run_job`` actions, providers for the API).
"""
