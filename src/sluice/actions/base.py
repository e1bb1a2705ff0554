"""Actions turn scored rows into deliveries (webhook, Kafka, e-mail, jobs, ...).

Integration contract with the runner (``runners/local.py``):

* ``engine = ActionEngine(pipeline.actions, ActionContext(...))`` once per run.
* per epoch: ``pending = engine.evaluate(table, ctx)`` after the models;
  at checkpoint: ``CheckpointStore.commit(..., writers=[engine.outbox_writer(pending, epoch)])``
  so outbox rows are durable in the same transaction as the epoch;
  after the commit: ``engine.notify()`` wakes the dispatcher.
* ``engine.state()`` / ``engine.restore(blob)`` checkpoint rule state (for/dedupe/cooldown).
"""

from __future__ import annotations

BUILTIN_ACTIONS = {
    "webhook": "sluice.actions.webhook:WebhookAction",
    "slack": "sluice.actions.webhook:SlackAction",
    "log": "sluice.actions.log:LogAction",
    "email": "sluice.actions.email:EmailAction",
    "kafka": "sluice.actions.kafka:KafkaAction",
    "run_job": "sluice.actions.jobs:RunJobAction",
    "airflow": "sluice.actions.airflow:AirflowAction",
}
