"""The demo's pipeline files (written under SLUICE_HOME/demo so users can read and rerun them)."""

from __future__ import annotations

TELEMETRY = """\
# IoT telemetry: validate, derive, enrich, window, score, act, land in lake + warehouse.
name: telemetry
source: {{type: file, path: "{data}/telemetry.jsonl", format: json}}
schema:
  device_id: {{type: string, required: true}}
  ts: timestamp
  temperature: double
  pressure: double
  vibration: double
  status: string
  is_anomaly: boolean
  anomaly_kind: string
event_time: ts
batch: {{max_rows: 20000}}  # epochs of 20k rows: the progress bar moves while it runs
transforms:
  - derive: {{temp_c: "round((temperature - 32) * 5 / 9, 3)"}}
  - enrich: {{path: "{data}/devices.csv", on: device_id, columns: [site, model]}}
  - window: {{key: device_id, size: 1m, aggregate: {{temp_c_mean: "avg(temp_c)",
      pressure_max: "max(pressure)", events: "count(*)"}}, into: telemetry_1m}}
{models}{actions}sinks:
  - {{type: lake, table: telemetry}}
  - {{type: warehouse, table: telemetry}}
"""

TELEMETRY_MODELS = """\
models:
  - {name: temp_anomaly, type: online_anomaly, key: device_id,
     features: [temp_c, pressure, vibration],
     drift: {reference: 5000, window: 5000, on_drift: alert}}
"""

TELEMETRY_ACTIONS = """\
actions:
  - name: page-oncall
    when: "temp_anomaly_anomaly AND temp_anomaly_onset > 0"  # once per incident
    type: webhook
    url: "{receiver}/alerts"
    severity: critical
    dedupe: {{key: device_id, window: 10m}}
    payload: {{device: "{{{{ device_id }}}}", at: "{{{{ ts }}}}", why: "{{{{ reason }}}}"}}
"""

TICKET_ACTIONS = """\
actions:
  - name: route-urgent
    when: "ticket_urgency_label = 'critical'"
    type: log
    key: ticket_id
    path: "{home}/demo/urgent_tickets.jsonl"
    payload: {{ticket: "{{{{ ticket_id }}}}", team: "{{{{ ticket_category_label }}}}",
               text: "{{{{ text }}}}"}}
"""

TICKET_MODELS = """\
models:
  - {name: ticket_category, type: text_classifier, features: [text]}
  - {name: ticket_urgency, type: text_classifier, features: [text]}
"""

TICKETS = """\
# Support tickets: validate and land; the text model routes them (category, urgency).
name: tickets
source: {{type: file, path: "{data}/tickets.jsonl", format: json}}
schema:
  ticket_id: {{type: string, required: true}}
  ts: timestamp
  customer: string
  text: {{type: string, required: true}}
  category: string
  urgency: string
event_time: ts
{models}{actions}sinks:
  - {{type: lake, table: tickets}}
  - {{type: warehouse, table: tickets}}
"""

JOBS = """\
# Nightly maintenance: retrain the batch anomaly model on the lake, promote it if it is
# better, compact the telemetry table, then check the data. `sluice jobs run nightly`.
jobs:
  - name: nightly
    schedule: {cron: "0 2 * * *", timezone: UTC}
    retries: 2
    retry_delay: 5m
    timeout: 30m
    tasks:
      - {name: train, type: train_model, model: telemetry_iforest, kind: isolation_forest,
         table: telemetry, features: [temp_c, pressure, vibration], label: is_anomaly}
      - {name: promote, type: promote_if_better, model: telemetry_iforest, metric: f1,
         depends_on: [train]}
      - {name: compact, type: compact, table: telemetry}
      - {name: check, type: quality_check, table: telemetry, min_rows: 1,
         not_null: [device_id, ts], depends_on: [promote, compact]}
"""
