"""The ``run_job`` action: start a Sluice job (e.g. retraining) through an injected runner.

Orchestration owns jobs; the engine receives ``job_runner(job, params, idempotency_key)``
(``ActionEngine(..., job_runner=...)``). Without one, deliveries fail permanently with a
clear reason. ``params`` is the rendered payload merged over the static ``params``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from sluice.actions.base import Action, Delivery, OptionsModel
from sluice.core.errors import PermanentActionError, PermanentError, TransientActionError


class RunJobOptions(OptionsModel):
    """Options of the ``run_job`` action."""

    job: str
    params: dict[str, Any] = Field(default_factory=dict)


class RunJobAction(Action):
    """Calls the injected job runner with the job name and parameters."""

    Options = RunJobOptions
    options: RunJobOptions

    @property
    def target(self) -> str:
        """The job started."""
        return f"job:{self.options.job}"

    def deliver(self, delivery: Delivery) -> None:
        """Start the job; runner errors marked permanent are not retried."""
        runner = self.context.job_runner
        if runner is None:
            raise PermanentActionError(
                f"action {self.name!r}: no job runner is configured to start job "
                f"{self.options.job!r} (run the pipeline under `sluice serve`)"
            )
        payload = delivery.payload
        params = {
            **self.options.params,
            **(payload if isinstance(payload, dict) else {"payload": payload}),
        }
        try:
            runner(self.options.job, params, delivery.idempotency_key)
        except PermanentError as exc:
            raise PermanentActionError(f"job {self.options.job!r}: {exc}") from None
        except Exception as exc:  # anything else may pass on retry
            raise TransientActionError(
                f"job {self.options.job!r}: {type(exc).__name__}: {exc}"
            ) from None
