"""API keys, roles and the loopback rule."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from sluice.api import ApiConfig, ApiKeys, check_bind, create_app, hash_key
from sluice.api.auth import is_loopback
from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.storage.log import open_log

pytestmark = pytest.mark.anyio
KEYS = "r-key:read,w-key:write,a-key:admin"


def _client(home: Path, keys: ApiKeys, client_host: str = "127.0.0.1") -> httpx.AsyncClient:
    app = create_app(Settings(home=home), api_keys=keys, config=ApiConfig(auto_create_streams=True))
    transport = httpx.ASGITransport(app=app, client=(client_host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:5000")


@pytest.mark.parametrize(
    ("method", "path", "needs"),
    [
        ("GET", "/api/v1/streams", "read"),
        ("GET", "/metrics", "read"),
        ("POST", "/api/v1/ingest/s", "write"),
        ("POST", "/api/v1/pipelines/p/stop", "admin"),
        ("POST", "/api/v1/dlq/replay", "admin"),
    ],
)
async def test_roles_are_ordered_read_write_admin(
    tmp_path: Path, method: str, path: str, needs: str
) -> None:
    order = ["read", "write", "admin"]
    async with _client(tmp_path, ApiKeys.from_pairs(KEYS)) as c:
        r = await c.request(method, path)
        assert r.status_code == 401
        assert r.json()["error"] == "missing API key"
        assert r.json()["detail"]["required_role"] == needs
        for role in order:
            key = f"{role[0]}-key"
            r = await c.request(
                method, path, headers={"Authorization": f"Bearer {key}"}, json={"x": 1}
            )
            allowed = order.index(role) >= order.index(needs)
            if allowed:
                assert r.status_code not in (401, 403), (role, r.text)
            else:
                assert r.status_code == 403
                assert r.json()["error"] == (
                    f"this endpoint needs the {needs!r} role; the key has {role!r}"
                )


async def test_wrong_key_and_x_api_key_header(tmp_path: Path) -> None:
    async with _client(tmp_path, ApiKeys.from_pairs(KEYS)) as c:
        r = await c.get("/api/v1/models", headers={"X-API-Key": "guess"})
        assert r.status_code == 401 and r.json()["error"] == "invalid API key"
        assert "guess" not in r.text
        assert (await c.get("/api/v1/models", headers={"X-API-Key": "r-key"})).status_code == 200
        assert (await c.get("/healthz")).status_code == 200  # probes need no key


async def test_write_key_ingests(tmp_path: Path) -> None:
    async with _client(tmp_path, ApiKeys.from_pairs(KEYS), client_host="10.1.2.3") as c:
        r = await c.post("/api/v1/ingest/s", json={"a": 1}, headers={"X-API-Key": "w-key"})
    assert r.status_code == 202
    assert open_log(Settings(home=tmp_path).log_dir).end_offset("s") == 1


async def test_without_keys_only_loopback_clients(tmp_path: Path) -> None:
    async with _client(tmp_path, ApiKeys(), client_host="10.1.2.3") as c:
        r = await c.post("/api/v1/ingest/s", json={"a": 1})
        assert r.status_code == 403
        assert "only loopback clients" in r.json()["error"]
    assert not open_log(Settings(home=tmp_path).log_dir).exists("s")
    async with _client(tmp_path, ApiKeys(), client_host="::1") as c:
        assert (await c.post("/api/v1/ingest/s", json={"a": 1})).status_code == 202


def test_keys_file_holds_hashes(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# ops keys\n{hash_key('s3cret')}:admin\n\n{hash_key('viewer')}:read\n")
    keys = ApiKeys.from_file(path)
    assert keys.role_of("s3cret") == "admin"
    assert keys.role_of("viewer") == "read"
    assert keys.role_of(hash_key("s3cret")) is None
    assert "s3cret" not in repr(keys)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("notahash:admin\n", "keys:1: expected SHA256-HEX:ROLE"),
        (f"{hash_key('k')}:root\n", "unknown role 'root'"),
    ],
)
def test_bad_keys_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        ApiKeys.from_file(path)


def test_keys_from_env(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"{hash_key('from-file')}:write\n")
    keys = ApiKeys.from_env(
        {"SLUICE_API_KEYS": "a:read, b:admin", "SLUICE_API_KEYS_FILE": str(path)}
    )
    assert [keys.role_of(k) for k in ("a", "b", "from-file", "c")] == [
        "read",
        "admin",
        "write",
        None,
    ]
    with pytest.raises(ConfigError, match="entry 1 must look like KEY:ROLE"):
        ApiKeys.from_pairs("justakey")
    assert not ApiKeys.from_env({})


def test_check_bind_refuses_public_address_without_keys() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, ApiKeys())
    with pytest.raises(ConfigError, match=r"refusing to listen on 0\.0\.0\.0.*SLUICE_API_KEYS"):
        check_bind("0.0.0.0", ApiKeys())
    check_bind("0.0.0.0", ApiKeys.from_pairs("k:read"))
    assert not is_loopback("example.com") and not is_loopback(None)
