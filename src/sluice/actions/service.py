"""``ActionsService``: the audit trail and operator commands behind the CLI and the API.

``sluice actions list|retry|approve|reject`` and ``GET /api/v1/actions`` call this class;
a running dispatcher picks up retried/approved rows at its next poll.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select, Table, and_, func, or_, select, update

from sluice.actions.outbox import (
    AWAITING,
    DEAD,
    EXPIRED,
    FAILED,
    PENDING,
    REJECTED,
    STATUSES,
    as_dicts,
    attempts,
    counts,
    decode_payload,
    ensure_outbox,
    lazy_head_columns,
    lazy_rows,
    outbox,
    states,
    with_payloads,
)
from sluice.core.errors import ActionError, NotFoundError, PermanentError, QueryError
from sluice.core.settings import Settings
from sluice.storage.db import get_engine

Rows = list[dict[str, Any]]

RETRYABLE = (FAILED, DEAD, EXPIRED, REJECTED)


class ActionStateError(ActionError, PermanentError):
    """The action is not in a state that allows this command (e.g. approving a delivered one)."""


class ActionsService:
    """Lists actions, shows their attempts, and retries/approves/rejects them."""

    def __init__(
        self,
        engine: Engine | None = None,
        settings: Settings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if engine is None:
            engine = get_engine(str((settings or Settings()).metadata_url))
        self.engine = engine
        self.clock = clock
        ensure_outbox(engine)

    def list(
        self,
        status: str | None = None,
        *,
        pipeline: str | None = None,
        action: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Actions, newest first, optionally filtered: outbox rows and the actions of lazy
        batches (which have none), merged by id."""
        if status is not None and status not in STATUSES:
            raise QueryError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
        limit, offset = max(1, min(limit, 10_000)), max(0, offset)
        with self.engine.connect() as conn:
            heads = list(
                conn.execute(
                    _where(
                        select(*lazy_head_columns()).order_by(states.c.first_id.desc()),
                        status,
                        pipeline,
                        action,
                        states,
                    )
                )
            )
            if not heads:  # no lazy batch: the outbox rows alone, paged by the database
                query = _where(
                    select(outbox).order_by(outbox.c.id.desc()).limit(limit).offset(offset),
                    status,
                    pipeline,
                    action,
                )
                return [_public(r) for r in with_payloads(conn, as_dicts(conn.execute(query)))]
            ids = conn.execute(
                _where(
                    select(outbox.c.id).order_by(outbox.c.id.desc()).limit(offset + limit),
                    status,
                    pipeline,
                    action,
                )
            ).scalars()
            real, lazy = _page(list(ids), heads, offset, limit)
            found = {
                r["id"]: r
                for r in with_payloads(
                    conn, as_dicts(conn.execute(select(outbox).where(outbox.c.id.in_(real))))
                )
            }
            found.update((r["id"], r) for r in lazy_rows(conn, lazy))
        return [_public(found[i]) for i in sorted(found, reverse=True)]

    def count(
        self,
        status: str | None = None,
        *,
        pipeline: str | None = None,
        action: str | None = None,
    ) -> int:
        """How many actions ``list`` with the same filters pages through."""
        query = _where(select(func.count()).select_from(outbox), status, pipeline, action)
        lazy = _where(
            select(func.coalesce(func.sum(states.c.count), 0)),
            status,
            pipeline,
            action,
            states,
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one()) + int(conn.execute(lazy).scalar_one())

    def get(self, action_id: int) -> dict[str, Any]:
        """One action with its attempts."""
        with self.engine.connect() as conn:
            found = as_dicts(conn.execute(select(outbox).where(outbox.c.id == action_id)))
            row = with_payloads(conn, found)[0] if found else _lazy_action(conn, action_id)
            mine = attempts.c.outbox_id == action_id
            if row["batch_id"] is not None:  # or an attempt covering a run of its batch
                mine = or_(
                    mine,
                    and_(
                        attempts.c.batch_id == row["batch_id"],
                        attempts.c.outbox_id <= action_id,
                        attempts.c.last_outbox_id >= action_id,
                    ),
                )
            tries = as_dicts(conn.execute(select(*_ATTEMPT).where(mine).order_by(attempts.c.id)))
        out = _public(row)
        out["attempt_log"] = [{**t, "outbox_id": action_id} for t in tries]
        return out

    def retry(self, action_id: int) -> dict[str, Any]:
        """Queue a failed, dead, expired or rejected action again with a fresh retry budget."""
        return self._move(action_id, RETRYABLE, PENDING, reset=True)

    def approve(self, action_id: int) -> dict[str, Any]:
        """Release an action held for approval (an expired one cannot be approved)."""
        row = self.get(action_id)
        if (
            row["status"] == AWAITING
            and row["expires_at"] is not None
            and row["expires_at"] <= self.clock()
        ):
            self._move(action_id, (AWAITING,), EXPIRED, error="approval expired")
            raise ActionStateError(f"action {action_id} expired before it was approved")
        return self._move(action_id, (AWAITING,), PENDING)

    def reject(self, action_id: int) -> dict[str, Any]:
        """Reject an action held for approval; it is never delivered."""
        return self._move(action_id, (AWAITING,), REJECTED, error="rejected by an operator")

    def _move(
        self,
        action_id: int,
        allowed: tuple[str, ...],
        status: str,
        *,
        reset: bool = False,
        error: str | None = None,
    ) -> dict[str, Any]:
        now = self.clock()
        values: dict[str, Any] = {
            "status": status,
            "updated_at": datetime.fromtimestamp(now, UTC),
            "next_attempt_at": now,
        }
        if reset:
            values.update(attempts=0, last_error=None)
        if error is not None:
            values["last_error"] = error
        with self.engine.begin() as conn:
            done = conn.execute(
                update(outbox)
                .where(outbox.c.id == action_id, outbox.c.status.in_(allowed))
                .values(**values)
            ).rowcount
        if not done:
            current = self.get(action_id)["status"]
            raise ActionStateError(
                f"action {action_id} is {current}; only "
                f"{'/'.join(allowed)} actions can become {status}"
            )
        return self.get(action_id)

    def by_rule(self) -> Rows:
        """Actions counted by pipeline, rule (action) and status."""
        query = select(outbox.c.pipeline, outbox.c.action, outbox.c.status, func.count()).group_by(
            outbox.c.pipeline, outbox.c.action, outbox.c.status
        )
        lazy = select(
            states.c.pipeline, states.c.action, states.c.status, func.sum(states.c.count)
        ).group_by(states.c.pipeline, states.c.action, states.c.status)
        tally: Counter[tuple[str, str, str]] = Counter()
        with self.engine.connect() as conn:
            for p, a, s, n in [*conn.execute(query), *conn.execute(lazy)]:
                tally[(p, a, s)] += int(n)
        return [
            {"pipeline": p, "action": a, "status": s, "count": n}
            for (p, a, s), n in sorted(tally.items())
        ]

    def stats(self, pipeline: str | None = None) -> dict[str, Any]:
        """Counts by status, fired/suppressed totals per action, attempt latency."""
        by_status = select(outbox.c.status, func.count()).group_by(outbox.c.status)
        lazy = select(states.c.status, func.sum(states.c.count)).group_by(states.c.status)
        totals = select(
            counts.c.pipeline,
            counts.c.action,
            *(func.sum(getattr(counts.c, c)).label(c) for c in _COUNT_COLUMNS),
        ).group_by(counts.c.pipeline, counts.c.action)
        if pipeline is not None:
            by_status = by_status.where(outbox.c.pipeline == pipeline)
            lazy = lazy.where(states.c.pipeline == pipeline)
            totals = totals.where(counts.c.pipeline == pipeline)
        # an attempt row covering a run of n outbox rows counts n attempts of its latency
        covered = func.coalesce(attempts.c.last_outbox_id - attempts.c.outbox_id + 1, 1)
        latency = select(
            func.sum(covered),
            func.sum(covered * attempts.c.latency_ms) / func.sum(covered),
            func.max(attempts.c.latency_ms),
        )
        statuses: Counter[str] = Counter()
        with self.engine.connect() as conn:
            for s, n in [*conn.execute(by_status), *conn.execute(lazy)]:
                statuses[s] += int(n)
            actions = [
                {k: (int(v) if k in _COUNT_COLUMNS else v) for k, v in r.items()}
                for r in as_dicts(conn.execute(totals))
            ]
            n, avg, worst = conn.execute(latency).one()
        return {
            "by_status": {s: statuses.get(s, 0) for s in STATUSES},
            "actions": actions,
            "attempts": {"count": int(n or 0), "avg_latency_ms": avg, "max_latency_ms": worst},
        }


_COUNT_COLUMNS = (
    "fired",
    "emitted",
    "suppressed_dedupe",
    "suppressed_cooldown",
    "suppressed_rate_limit",
    "template_errors",
    "rule_errors",
)


def _where(
    query: Select[Any],
    status: str | None,
    pipeline: str | None,
    action: str | None,
    table: Table = outbox,
) -> Any:
    """``query`` narrowed to the given status, pipeline and action (None: any)."""
    for column, value in (
        (table.c.status, status),
        (table.c.pipeline, pipeline),
        (table.c.action, action),
    ):
        if value is not None:
            query = query.where(column == value)
    return query


def _page(
    real: list[int], heads: list[Any], offset: int, limit: int
) -> tuple[list[int], list[tuple[Any, int]]]:
    """The actions at ``offset .. offset + limit`` of the merged id order (newest first).

    ``real``: the newest ``offset + limit`` outbox ids, descending; ``heads``: lazy
    batches by ``first_id`` descending (each the ids ``first_id .. first_id + n - 1``).
    Returns the outbox ids and the (batch, index) pairs on the page.
    """
    out_real: list[int] = []
    out_lazy: list[tuple[Any, int]] = []
    position, r, h = 0, 0, 0
    index = heads[0].n - 1 if heads else -1  # the next lazy action: heads[h], index
    end = offset + limit
    while position < end:
        lazy_id = heads[h].first_id + index if h < len(heads) else None
        real_id = real[r] if r < len(real) else None
        if lazy_id is None and real_id is None:
            break
        if real_id is not None and (lazy_id is None or real_id > lazy_id):
            if position >= offset:
                out_real.append(real_id)
            r += 1
            position += 1
            continue
        # lazy actions down to the next outbox id (or the offset) in one step
        assert lazy_id is not None
        low = heads[h].first_id
        if real_id is not None:
            low = max(low, real_id + 1)
        take = min(lazy_id - low + 1, end - position)
        skip = max(0, min(take, offset - position))
        out_lazy.extend((heads[h], i) for i in range(index - skip, index - take, -1))
        position += take
        index -= take
        if index < 0:
            h += 1
            index = heads[h].n - 1 if h < len(heads) else -1
    return out_real, out_lazy


def _lazy_action(conn: Connection, action_id: int) -> dict[str, Any]:
    """The action ``action_id`` of a lazy batch (which has no outbox row)."""
    head = conn.execute(
        select(*lazy_head_columns())
        .where(states.c.first_id <= action_id)
        .order_by(states.c.first_id.desc())
        .limit(1)
    ).first()
    if head is None or action_id >= head.first_id + head.n:
        raise NotFoundError(f"action {action_id} does not exist")
    return lazy_rows(conn, [(head, action_id - head.first_id)])[0]


_ATTEMPT = [c for c in attempts.c if c.name not in ("last_outbox_id", "batch_id")]


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """An outbox row as shown: its message decoded, times as text, no storage columns."""
    row = {k: v for k, v in row.items() if k not in ("batch_id", "batch_index")}
    row["payload"] = decode_payload(row["payload"] or "{}")
    for name in ("created_at", "updated_at"):
        if isinstance(row.get(name), datetime):
            row[name] = row[name].isoformat()
    return row
