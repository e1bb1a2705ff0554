"""The local MariaDB for tests: reachability and throw-away databases (through the CLI)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid

from tests.conftest import require_service

HOST, PORT = "127.0.0.1", 3306
SERVER = f"mysql://root@{HOST}:{PORT}"


def mariadb_up() -> bool:
    """True when MariaDB accepts connections and the ``mysql`` client is installed."""
    if shutil.which("mysql") is None:
        return False
    try:
        with socket.create_connection((HOST, PORT), timeout=3):
            return True
    except OSError:
        return False


def execute(sql: str, database: str | None = None) -> str:
    """Run ``sql`` as root over TCP; the client's tab-separated output."""
    args = ["mysql", f"-h{HOST}", f"-P{PORT}", "-uroot", "--batch", "-e", sql]
    if database:
        args.append(database)
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout


def create_database(prefix: str) -> str:
    """A uniquely named database (failing under CI without MariaDB); its name."""
    require_service(mariadb_up(), "MariaDB at 127.0.0.1:3306")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    execute(f"CREATE DATABASE `{name}`")
    return name


def drop_database(name: str) -> None:
    """Drop ``name``."""
    execute(f"DROP DATABASE IF EXISTS `{name}`")
