"""Finding, opening and reading the Delta tables under the lake root (local or ``s3://``).

Object-store credentials come from the standard AWS environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``,
``AWS_ENDPOINT_URL``, ``AWS_ALLOW_HTTP``). deltalake 1.x commits to S3 with conditional
writes (``If-None-Match``), so several writers (replicas) may append to one table safely on
AWS S3 and on stores that support conditional writes (MinIO, moto); no locking provider or
``AWS_S3_ALLOW_UNSAFE_RENAME`` is needed (both are still passed through when set).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from sluice.core.errors import NotFoundError
from sluice.core.settings import Settings

if TYPE_CHECKING:
    import pyarrow.dataset as pads
    from deltalake import DeltaTable

DELTA_LOG = "_delta_log"
LOG_GAP = "Expected contiguous commit files"
COMMIT_LOST = "Failed to commit transaction"  # delta-rs gave up: others took every version
T = TypeVar("T")
_AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ALLOW_HTTP",
    "AWS_S3_ALLOW_UNSAFE_RENAME",
    "AWS_S3_LOCKING_PROVIDER",
    "DELTA_DYNAMO_TABLE_NAME",
    "AWS_CONDITIONAL_PUT",
)


def is_remote(uri: str) -> bool:
    """True for an object-store URL (``s3://``, ``gs://``, ...), False for a local path."""
    return "://" in uri and not uri.startswith("file://")


def storage_options(uri: str) -> dict[str, str] | None:
    """Delta storage options for ``uri``: the AWS environment for ``s3://``, else None."""
    if not uri.startswith(("s3://", "s3a://")):
        return None
    options = {key: os.environ[key] for key in _AWS_ENV if os.environ.get(key)}
    if "AWS_REGION" not in options and "AWS_DEFAULT_REGION" in options:
        options["AWS_REGION"] = options["AWS_DEFAULT_REGION"]
    return options


def missing_bucket(uri: str) -> str | None:
    """The bucket of an ``s3://`` URI when the store says it does not exist, else None."""
    if not uri.startswith(("s3://", "s3a://")):
        return None
    import pyarrow.fs as pafs

    bucket = uri.split("://", 1)[1].split("/", 1)[0]
    try:
        filesystem, _ = pafs.FileSystem.from_uri(uri)
        found = filesystem.get_file_info(bucket).type != pafs.FileType.NotFound
    except OSError:
        return None  # unreachable or refused: not known to be missing
    return None if found else bucket


def listing_retry(
    action: Callable[[], T],
    attempts: int = 6,
    guard: AbstractContextManager[object] | None = None,
    races: tuple[str, ...] = (LOG_GAP,),
) -> T:
    """Run a delta-rs call that lists the log, again when the listing raced with commits.

    A directory listing taken while log entries are being created may miss one entry and
    see the next (the order of a listing is not the order of creation); delta-rs then
    refuses the "gap". Listing again a moment later sees both. ``guard`` (a lock the
    writer of the appends holds while it commits) is taken for the last attempt, which
    then cannot race. ``races``: the error texts that mean the call raced with commits.
    """
    for attempt in range(attempts):
        try:
            if guard is not None and attempt == attempts - 1:
                with guard:
                    return action()
            return action()
        except Exception as exc:
            if not any(race in str(exc) for race in races) or attempt == attempts - 1:
                raise
            time.sleep(0.005 * (attempt + 1))
    raise AssertionError("unreachable")


def open_delta(uri: str) -> DeltaTable | None:
    """Open the Delta table at ``uri``, or return None when there is none yet."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return listing_retry(lambda: DeltaTable(uri, storage_options=storage_options(uri)))
    except TableNotFoundError:
        return None


def lake_table_names(settings: Settings) -> list[str]:
    """Names of the Delta tables directly under the lake root, sorted."""
    root = str(settings.lake_root).rstrip("/")
    if is_remote(root):
        return _remote_table_names(root)
    if not os.path.isdir(root):
        return []
    names = [
        entry.name
        for entry in os.scandir(root)
        if entry.is_dir() and os.path.isdir(os.path.join(entry.path, DELTA_LOG))
    ]
    return sorted(names)


def _remote_table_names(root: str) -> list[str]:
    import pyarrow.fs as pafs

    filesystem, base = pafs.FileSystem.from_uri(root)
    selector = pafs.FileSelector(base, allow_not_found=True)
    dirs = [
        info for info in filesystem.get_file_info(selector) if info.type == pafs.FileType.Directory
    ]
    names = []
    for info in dirs:
        log = filesystem.get_file_info(f"{info.path}/{DELTA_LOG}")
        if log.type == pafs.FileType.Directory:
            names.append(info.base_name)
    return sorted(names)


def open_lake_table(settings: Settings, name: str) -> DeltaTable:
    """Open the lake table ``name`` or raise NotFoundError."""
    table = open_delta(settings.lake_path(name))
    if table is None:
        raise NotFoundError(f"no lake table named {name!r}")
    return table


def lake_dataset(table: DeltaTable) -> pads.Dataset:
    """A pyarrow dataset over the table's current files (DuckDB scans it lazily)."""
    return table.to_pyarrow_dataset()


def lake_row_count(table: DeltaTable) -> int | None:
    """Row count from the Delta log's file statistics (None when a file lacks stats)."""
    actions = pa.table(table.get_add_actions(flatten=True))
    if "num_records" not in actions.column_names:
        return None
    counts = actions.column("num_records")
    if counts.null_count:
        return None
    return int(pc.sum(counts).as_py() or 0)


def read_lake_table(settings: Settings, name: str, columns: list[str] | None = None) -> pa.Table:
    """Read a whole lake table (or some of its columns) into memory."""
    return lake_dataset(open_lake_table(settings, name)).to_table(columns=columns)
