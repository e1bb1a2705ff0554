"""The dispatcher: delivers outbox rows in order per key, with retries and circuit breakers.

Each round reads the pending rows (oldest first), groups them into chains per
(pipeline, action, key) — a row whose key has an earlier row still waiting is held back —
delivers the chains on a small thread pool, and records every attempt in one transaction.
Transient failures are retried with exponential backoff and jitter until ``max_attempts``
(then ``dead``); permanent failures are ``failed`` at once. A target that keeps failing
opens its circuit breaker: its rows wait without spending attempts until it half-opens.
The rows of a batched type (``log``) go in one call per route and are recorded per run of
consecutive rows of one epoch's batch: one ``UPDATE`` over the id range and one attempt
row covering it. A round first plans per batch: a batch of a batched route whose rows
are all pending, never tried and due (the usual case) is delivered straight from its
``action_batches`` row, without reading its outbox rows; the rest is read row by row,
its messages from ``action_batches`` once per batch (kept while later rounds still
deliver from it).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    event,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.pool import QueuePool

from sluice.actions.base import Action, BatchDelivery, Delivery
from sluice.actions.outbox import (
    AWAITING,
    DEAD,
    DELIVERED,
    EXPIRED,
    FAILED,
    PENDING,
    PreparedPart,
    attempts,
    batch_messages,
    batches,
    ensure_outbox,
    lazy_head_columns,
    materialise,
    outbox,
    states,
    unpack_messages,
)
from sluice.actions.rules import RetrySpec
from sluice.core.errors import PermanentError
from sluice.core.metrics import ACTION_DELIVERIES
from sluice.core.threads import background_priority
from sluice.core.types import duration_us
from sluice.storage.db import sqlite_pragmas
from sluice.storage.upsert import insert_rows, update_rows

log = logging.getLogger("sluice.actions")
Clock = Callable[[], float]


@dataclass
class Route:
    """Where the rows of one (pipeline, action) go, and how they are retried."""

    action: Action
    retry: RetrySpec

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed ``attempt``: exponential, capped, equal jitter."""
        base = duration_us(self.retry.backoff) / 1e6
        cap = duration_us(self.retry.max_backoff) / 1e6
        delay = min(cap, base * 2 ** min(attempt - 1, 40))
        return delay / 2 + rng.uniform(0, delay / 2)


class CircuitBreaker:
    """Per-target breaker: opens after ``threshold`` consecutive failures for ``reset`` s."""

    def __init__(self, threshold: int, reset: float, clock: Clock) -> None:
        self.threshold, self.reset, self.clock = threshold, reset, clock
        self._failures: dict[str, int] = {}
        self._open_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def allow(self, target: str) -> bool:
        """True when the target is closed, or open long enough to try again (half-open)."""
        with self._lock:
            return self._open_until.get(target, 0.0) <= self.clock()

    def open_until(self, target: str) -> float:
        """When an open breaker lets a probe through (0 when closed)."""
        return self._open_until.get(target, 0.0)

    def success(self, target: str) -> None:
        """Close the breaker."""
        with self._lock:
            self._failures.pop(target, None)
            self._open_until.pop(target, None)

    def failure(self, target: str) -> None:
        """Count a failure; open (or re-open) at the threshold."""
        with self._lock:
            count = self._failures.get(target, 0) + 1
            self._failures[target] = count
            if count >= self.threshold:
                self._open_until[target] = self.clock() + self.reset
                if count == self.threshold:
                    log.warning("circuit breaker open for %s (%d failures)", target, count)


@dataclass
class Outcome:
    """The result of one delivery attempt."""

    row: Any
    status: str  # delivered | transient | permanent
    latency_ms: float
    error: str | None = None


class Dispatcher:
    """Delivers outbox rows of the given routes; ``start()`` runs it in a background thread."""

    def __init__(
        self,
        engine: Engine,
        routes: dict[tuple[str, str], Route],
        *,
        workers: int = 8,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        breaker_threshold: int = 5,
        breaker_reset: float = 30.0,
        clock: Clock = time.time,
        seed: int | None = None,
    ) -> None:
        ensure_outbox(engine)
        self.engine, self.routes = engine, routes
        self._db = _kept_engine(engine)  # the rounds' connections
        self.workers, self.batch_size, self.poll_interval = workers, batch_size, poll_interval
        self.clock = clock
        self.breaker = CircuitBreaker(breaker_threshold, breaker_reset, clock)
        self._rng = random.Random(seed)
        self._pipelines = sorted({p for p, _ in routes})
        # rows of batched types cost one call per route: read more of them per round
        batched = any(r.action.batched for r in routes.values())
        self._read_limit = max(batch_size * 4, _BATCHED_READ if batched else 0)
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._next_due = float("inf")
        self._messages: dict[int, list[bytes]] = {}  # batch id -> its messages
        # batch id -> a part this process committed lately: its messages, not read back
        self._recent: dict[int, Remembered] = {}
        self._recent_lock = threading.Lock()
        # route -> first id of its oldest lazy batch a round left pending (rows after wait)
        self._held: dict[tuple[str, str], int] = {}

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the background delivery thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="sluice-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread after its current round and release the pool."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._db is not self.engine:
            self._db.dispose()  # closes the kept connections (reopened if used again)

    def remember(self, parts: list[PreparedPart]) -> None:
        """Keep the messages of batch parts just committed (``write_prepared``'s), to deliver
        them without reading them back; the oldest go past ``_RECENT_BYTES``."""
        with self._recent_lock:
            for part in parts:
                if part.batch_id is not None and (part.lazy or part.status == PENDING):
                    head = (part.pipeline, part.epoch, part.action, part.count)
                    self._recent[part.batch_id] = Remembered(head, part.keys, part.texts, part.size)
            total = sum(r.size for r in self._recent.values())
            while total > _RECENT_BYTES:
                total -= self._recent.pop(next(iter(self._recent))).size

    def _take_recent(self, heads: dict[int, tuple[Any, ...]]) -> dict[int, Remembered]:
        """The remembered parts of these batches, forgotten here. ``heads``: batch id ->
        (pipeline, epoch, action[, count]) as read from the database; a part that differs
        is not used."""
        with self._recent_lock:
            found = {i: self._recent.pop(i) for i in heads if i in self._recent}
        return {i: r for i, r in found.items() if r.head[: len(heads[i])] == heads[i]}

    def wake(self) -> None:
        """Deliver new rows now instead of at the next poll."""
        self._wake.set()

    def _loop(self) -> None:
        background_priority()  # deliveries wait for the pipeline's threads, not the reverse
        while not self._stop.is_set():
            try:
                done = self.run_once()
            except Exception:  # the dispatcher must survive DB hiccups
                log.exception("action dispatcher round failed")
                done = 0
            if done:
                continue
            timeout = min(self.poll_interval, max(0.0, self._next_due - self.clock()))
            self._wake.wait(timeout)
            self._wake.clear()

    # -- one round -----------------------------------------------------------------------
    def run_once(self) -> int:
        """Expire approvals, deliver what is due, record the attempts; return attempts made."""
        if not self.routes:
            return 0
        now = self.clock()
        self._next_due = float("inf")
        self._expire(now)
        done = self._deliver_batches(now)
        chains = self._plan(self._pending(), now)
        if not chains:
            return done
        outcomes, chains = self._deliver_batched(chains)
        if chains:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sluice-action")
            outcomes += [o for chain in self._pool.map(self._deliver_chain, chains) for o in chain]
        self._record(outcomes)
        return done + sum(len(o.rows) if isinstance(o, Delivered) else 1 for o in outcomes)

    def _deliver_batches(self, now: float) -> int:
        """Deliver the lazy batches (actions without outbox rows) of batched routes, one
        call each; return the actions delivered.

        A batch whose route has an older pending outbox row, or whose delivery fails (and
        the route's later batches), gets its outbox rows (``materialise``): the row-by-row
        path then orders and decides each as it does any row. A batch waits while its
        target's breaker is open or the round has enough; the row-by-row path then holds
        the route's later rows too (``_held``).
        """
        self._held = {}
        routes = {k for k, r in self.routes.items() if r.action.batched}
        if not routes:
            return 0
        pipelines = sorted({p for p, _ in routes})
        with self._db.connect() as conn:
            heads = conn.execute(
                select(*lazy_head_columns())
                .where(_BATCH_PENDING, states.c.pipeline.in_(pipelines))
                .order_by(states.c.id)
            ).all()
            if not heads:
                return 0
            older = {
                (p, a): first
                for p, a, first in conn.execute(
                    select(outbox.c.pipeline, outbox.c.action, func.min(outbox.c.id))
                    .where(
                        _IS_PENDING,
                        outbox.c.pipeline.in_(pipelines),
                        outbox.c.action.in_(sorted({h.action for h in heads})),
                    )
                    .group_by(outbox.c.pipeline, outbox.c.action)
                )
            }
            plan: list[Any] = []
            rows: list[int] = []  # batches to give outbox rows
            size = 0
            for head in heads:
                route = (head.pipeline, head.action)
                if route not in routes or route in self._held:
                    continue
                if older.get(route, head.first_id) < head.first_id:
                    rows.append(head.id)
                    continue
                if not self.breaker.allow(self.routes[route].action.target) or size > _READ:
                    self._held[route] = head.first_id
                    continue
                plan.append(head)
                size += head.n
            if not plan:
                self._materialise(rows, now)
                return 0
            recent = self._take_recent(
                {head.id: (head.pipeline, head.epoch, head.action, head.n) for head in plan}
            )
            bodies: dict[int, tuple[list[str], list[bytes]]] = {
                i: (part.keys, part.texts) for i, part in recent.items()
            }
            unread = [head.id for head in plan if head.id not in bodies]
            if unread:
                query = select(batches.c.id, batches.c.message_keys, batches.c.messages)
                bodies.update(
                    (i, (orjson.loads(keys), unpack_messages(blob)))
                    for i, keys, blob in conn.execute(query.where(batches.c.id.in_(unread)))
                )
        return self._send_batches(plan, bodies, rows, now)

    def _materialise(self, batch_ids: list[int], now: float) -> None:
        """Give the actions of these lazy batches outbox rows (one transaction)."""
        if batch_ids:
            with self._db.begin() as conn:
                for batch_id in batch_ids:
                    materialise(conn, batch_id, now)

    def _send_batches(
        self,
        plan: list[Any],
        bodies: dict[int, tuple[list[str], list[bytes]]],
        rows: list[int],
        now: float,
    ) -> int:
        """Deliver the planned lazy batches, those of one ``batch_group`` (rules logging to
        one file) in one call, the others one call each; mark the delivered ones per batch.

        A failed call's batches, and their routes' later ones, get outbox rows, with ``rows``.
        """
        # the batches of actions that deliver together (rules logging to one file): one call
        groups: dict[Hashable, tuple[Action, list[tuple[Any, BatchDelivery]]]] = {}
        for head in plan:
            keys, messages = bodies[head.id]
            batch = BatchDelivery(
                head.first_id, head.pipeline, head.action, head.epoch, head.severity, keys, messages
            )
            action = self.routes[(head.pipeline, head.action)].action
            group = head.id if action.batch_group is None else action.batch_group
            groups.setdefault(group, (action, []))[1].append((head, batch))
        sent: list[tuple[Any, float]] = []
        failed: set[tuple[str, str]] = set()
        for action, members in groups.values():
            # after a failed batch of a route, its later ones wait (as outbox rows)
            rows.extend(head.id for head, _ in members if (head.pipeline, head.action) in failed)
            live = [(head, b) for head, b in members if (head.pipeline, head.action) not in failed]
            if not live:
                continue
            started = time.perf_counter()
            try:
                action.deliver_batches([batch for _, batch in live])
            except Exception:  # the row-by-row path decides each row's outcome
                failed.update((head.pipeline, head.action) for head, _ in live)
                rows.extend(head.id for head, _ in live)
                continue
            self.breaker.success(action.target)
            latency = round(_ms(started) / sum(len(batch) for _, batch in live), 3)
            for head, _ in live:
                sent.append((head, latency))
                ACTION_DELIVERIES.labels(head.action, DELIVERED).inc(head.n)
        if sent:
            stamp = datetime.fromtimestamp(now, UTC)
            with self._db.begin() as conn:
                _relax_durability(conn)
                conn.execute(
                    update(states)
                    .where(states.c.id == bindparam("batch"), _BATCH_PENDING)
                    .values(
                        status=DELIVERED,
                        attempts=states.c.attempts + 1,
                        next_attempt_at=now,
                        updated_at=stamp,
                    ),
                    [{"batch": head.id} for head, _ in sent],
                )
                logged = [
                    (
                        head.first_id,
                        head.attempts + 1,
                        DELIVERED,
                        latency,
                        None,
                        stamp,
                        head.first_id + head.n - 1 if head.n > 1 else None,
                        head.id,
                    )
                    for head, latency in sent
                ]
                insert_rows(conn, attempts, (*_LOGGED, "last_outbox_id", "batch_id"), logged)
        self._materialise(rows, now)
        return sum(head.n for head, _ in sent)

    def _deliver_batched(
        self, chains: list[list[Any]]
    ) -> tuple[list[Outcome | Delivered], list[list[Any]]]:
        """Deliver the rows of batched action types, one call per route; return the rest.

        A failed batch falls back to row-by-row delivery, which decides each row's outcome.
        """
        groups: dict[tuple[str, str], list[list[Any]]] = {}
        rest: list[list[Any]] = []
        for chain in chains:
            route_key = (chain[0].pipeline, chain[0].action)
            if self.routes[route_key].action.batched:
                groups.setdefault(route_key, []).append(chain)
            else:
                rest.append(chain)
        outcomes: list[Outcome | Delivered] = []
        for route_key, group in groups.items():
            route = self.routes[route_key]
            if not self.breaker.allow(route.action.target):
                continue
            rows = sorted((row for chain in group for row in chain), key=lambda r: r.id)
            started = time.perf_counter()
            try:
                route.action.deliver_many([_delivery(row) for row in rows])
            except Exception:
                rest.extend(group)
                continue
            self.breaker.success(route.action.target)
            latency = round(_ms(started) / len(rows), 3)
            outcomes.append(Delivered(rows, latency))
        return outcomes, rest

    def _pending(self) -> list[Claimed]:
        """The pending rows (oldest first), each with its message read from its batch."""
        query = (
            select(*_CLAIMED)
            .where(_IS_PENDING, outbox.c.pipeline.in_(self._pipelines))
            .order_by(outbox.c.id)
            .limit(self._read_limit)
        )
        with self._db.connect() as conn:
            rows = [Claimed._make(row) for row in conn.execute(query).all()]
            wanted = {r.batch_id for r in rows if r.payload is None and r.batch_id is not None}
            cached = {i: self._messages[i] for i in wanted if i in self._messages}
            heads = {
                r.batch_id: (r.pipeline, r.epoch, r.action)
                for r in rows
                if r.batch_id in wanted and r.batch_id not in cached
            }
            cached.update((i, part.texts) for i, part in self._take_recent(heads).items())
            cached.update(batch_messages(conn, wanted - cached.keys()))
        self._messages = cached  # only the batches this round still delivers from
        return [
            r._replace(payload=cached[r.batch_id][r.batch_index or 0].decode())
            if r.payload is None and r.batch_id is not None and r.batch_id in cached
            else r
            for r in rows
        ]

    def _plan(self, rows: list[Any], now: float) -> list[list[Any]]:
        """Chains of due rows; a key whose oldest row is not due holds its later rows.

        ``batch_size`` bounds the rows a round delivers one by one; the rows of batched
        action types are delivered in one call per route and do not count.
        """
        blocked: set[tuple[str, str, str]] = set()
        chains: dict[tuple[str, str, str], list[Any]] = {}
        singles: list[list[Any]] = []
        taken = 0
        for row in rows:
            route = self.routes.get((row.pipeline, row.action))
            if route is None:
                continue
            key = (row.pipeline, row.action, row.key) if row.key else None
            if key is not None and key in blocked:
                continue
            held = self._held.get((row.pipeline, row.action))
            if held is not None and row.id > held:  # after a lazy batch still pending
                continue
            target = route.action.target
            due = max(row.next_attempt_at, self.breaker.open_until(target))
            batched = route.action.batched
            if due > now or (taken >= self.batch_size and not batched):
                self._next_due = min(self._next_due, due)
                if key is not None:
                    blocked.add(key)
                continue
            taken += not batched
            if key is None:
                singles.append([row])
            else:
                chains.setdefault(key, []).append(row)
        return [*chains.values(), *singles]

    def _deliver_chain(self, rows: list[Any]) -> list[Outcome]:
        out: list[Outcome] = []
        for row in rows:
            route = self.routes[(row.pipeline, row.action)]
            if not self.breaker.allow(route.action.target):
                break
            outcome = self._attempt(row, route)
            out.append(outcome)
            if outcome.status == "transient":
                break
        return out

    def _attempt(self, row: Any, route: Route) -> Outcome:
        delivery = _delivery(row)
        target = route.action.target
        started = time.perf_counter()
        try:
            route.action.deliver(delivery)
        except PermanentError as exc:
            return Outcome(row, "permanent", _ms(started), _reason(exc))
        except Exception as exc:  # transient or unknown: retried, bounded
            self.breaker.failure(target)
            return Outcome(row, "transient", _ms(started), _reason(exc))
        self.breaker.success(target)
        return Outcome(row, DELIVERED, _ms(started))

    def _record(self, outcomes: list[Outcome | Delivered]) -> None:
        now = self.clock()
        stamp = datetime.fromtimestamp(now, UTC)
        updates: list[tuple[Any, ...]] = []
        logged: list[tuple[Any, ...]] = []
        delivered: list[Delivered] = []
        tally: Counter[tuple[str, str]] = Counter()
        for o in outcomes:
            if isinstance(o, Delivered):
                delivered.append(o)
                tally.update(Counter((row.action, DELIVERED) for row in o.rows))
                continue
            attempt = o.row.attempts + 1
            status, next_at = self._next_status(o, attempt, now)
            tally[(o.row.action, _OUTCOMES.get(status, status))] += 1
            updates.append((status, attempt, next_at, o.error, stamp, o.row.id))
            logged.append((o.row.id, attempt, o.status, o.latency_ms, o.error, stamp))
            if status == DEAD:
                log.warning(
                    "action %s/%s #%d is dead after %d attempts: %s",
                    o.row.pipeline,
                    o.row.action,
                    o.row.id,
                    attempt,
                    o.error,
                )
        with self._db.begin() as conn:
            _relax_durability(conn)
            for group in delivered:
                _record_delivered(conn, group.rows, group.latency_ms, now, stamp)
            update_rows(conn, outbox, "id", _UPDATED, updates)
            insert_rows(conn, attempts, _LOGGED, logged)
        for (action, outcome), n in tally.items():
            ACTION_DELIVERIES.labels(action, outcome).inc(n)

    def _next_status(self, o: Outcome, attempt: int, now: float) -> tuple[str, float]:
        if o.status == DELIVERED:
            return DELIVERED, now
        if o.status == "permanent":
            return FAILED, now
        route = self.routes[(o.row.pipeline, o.row.action)]
        if attempt >= route.retry.max_attempts:
            return DEAD, now
        next_at = now + route.backoff(attempt, self._rng)
        self._next_due = min(self._next_due, next_at)
        return PENDING, next_at

    def _expire(self, now: float) -> None:
        """Expire the approvals past their time: a read first (the partial index of awaiting
        rows), so a round without any takes no write lock from the checkpoint's commits."""
        expired = (
            _IS_AWAITING,
            outbox.c.expires_at <= now,
            outbox.c.pipeline.in_(self._pipelines),
        )
        with self._db.connect() as conn:
            if conn.execute(select(outbox.c.id).where(*expired).limit(1)).first() is None:
                return
        with self._db.begin() as conn:
            _full_durability(conn)
            conn.execute(
                update(outbox)
                .where(*expired)
                .values(
                    status=EXPIRED,
                    last_error="approval expired",
                    updated_at=datetime.fromtimestamp(now, UTC),
                )
            )


_OUTCOMES = {PENDING: "retry"}
_BATCHED_READ = 10_000
_RECENT_BYTES = 64 << 20  # messages a dispatcher keeps of the batches lately committed
_READ = 50_000  # messages of whole batches one round delivers (at least one batch)
_UPDATED = ("status", "attempts", "next_attempt_at", "last_error", "updated_at")
_LOGGED = ("outbox_id", "attempt", "status", "latency_ms", "error", "at")


@dataclass
class Delivered:
    """Rows of a batched action type delivered in one call: recorded with two statements."""

    rows: list[Any]
    latency_ms: float


def _kept_engine(engine: Engine) -> Engine:
    """``engine``, or on SQLite an engine keeping its connections between rounds.

    The metadata engine opens a SQLite connection per use (``NullPool``): ~2 ms each (open,
    WAL and pragmas, the schema read again), four or more per round. An idle kept
    connection holds no lock; each use still takes its own (one per thread at a time).
    """
    if engine.dialect.name != "sqlite":
        return engine
    kept = create_engine(
        engine.url,
        poolclass=QueuePool,
        pool_size=1,
        max_overflow=8,
        connect_args={"check_same_thread": False},
    )
    event.listen(kept, "connect", sqlite_pragmas)
    return kept


def _full_durability(conn: Connection) -> None:
    """Sync this transaction's commit (a kept SQLite connection may have been relaxed)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA synchronous=FULL")


def _relax_durability(conn: Connection) -> None:
    """Commit this transaction without waiting for the disk (SQLite WAL, PostgreSQL).

    It only records outcomes: if a power loss drops it, its rows are delivered again
    (at-least-once, same idempotency keys), and a process crash loses nothing. The
    checkpoint's transaction, which inserts the outbox rows, stays fully synchronous.
    """
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA synchronous=NORMAL")  # until set again on this connection
    elif conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")


def _record_delivered(
    conn: Connection, rows: list[Any], latency_ms: float, now: float, stamp: datetime
) -> None:
    """Mark ``rows`` delivered (one more attempt) and log that attempt, per run of rows.

    A run is consecutive ids of one batch with the same attempt count (usually a whole
    batch): one ``UPDATE`` over its id range and one attempt row covering it.
    """
    runs = [
        (run[0].id, run[-1].id, run[0].attempts + 1, run[0].batch_id, latency_ms)
        for run in _runs(rows)
    ]
    _mark_delivered(conn, runs, now, stamp)


def _mark_delivered(
    conn: Connection,
    runs: list[tuple[int, int, int, int | None, float]],
    now: float,
    stamp: datetime,
) -> None:
    """Mark the pending rows ``first..last`` of each run delivered, one attempt row each.

    ``runs`` holds (first id, last id, attempt number, batch id, latency per row in ms).
    """
    mark = update(outbox).where(
        outbox.c.id.between(bindparam("first"), bindparam("last")), _IS_PENDING
    )
    mark = mark.values(
        status=DELIVERED,
        attempts=outbox.c.attempts + 1,
        next_attempt_at=now,
        last_error=None,
        updated_at=stamp,
    )
    conn.execute(mark, [{"first": first, "last": last} for first, last, *_ in runs])
    logged = [
        (first, attempt, DELIVERED, latency, None, stamp, last if last > first else None, batch)
        for first, last, attempt, batch, latency in runs
    ]
    insert_rows(conn, attempts, (*_LOGGED, "last_outbox_id", "batch_id"), logged)


def _runs(rows: list[Any]) -> list[list[Any]]:
    """``rows`` (sorted by id) cut where the id skips, the batch or the attempt count changes."""
    runs: list[list[Any]] = []
    for row in rows:
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and row.id == last.id + 1
            and row.batch_id is not None
            and row.batch_id == last.batch_id
            and row.attempts == last.attempts
        ):
            runs[-1].append(row)
        else:
            runs.append([row])
    return runs


_IS_PENDING = outbox.c.status == literal_column(f"'{PENDING}'")  # literal: the partial index
_IS_AWAITING = outbox.c.status == literal_column(f"'{AWAITING}'")
_BATCH_PENDING = states.c.status == literal_column(f"'{PENDING}'")


class Remembered(NamedTuple):
    """A batch part this process committed: its messages and keys, kept for delivery."""

    head: tuple[str, int, str, int]  # pipeline, epoch, action, count (as its stored row)
    keys: list[str]
    texts: list[bytes]
    size: int


class Claimed(NamedTuple):
    """The columns of an outbox row that a round reads (not the timestamps, slow to parse)."""

    id: int
    pipeline: str
    epoch: int
    action: str
    key: str
    severity: str
    idempotency_key: str
    payload: str | None  # None: the message is in batch_id at batch_index
    attempts: int
    next_attempt_at: float
    batch_id: int | None
    batch_index: int | None


_CLAIMED = [outbox.c[name] for name in Claimed._fields]


def _delivery(row: Any) -> Delivery:
    """The delivery of one outbox row (its next attempt)."""
    return Delivery(
        id=row.id,
        pipeline=row.pipeline,
        action=row.action,
        epoch=row.epoch,
        key=row.key,
        severity=row.severity,
        idempotency_key=row.idempotency_key,
        attempt=row.attempts + 1,
        text=row.payload,
    )


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:2000]
