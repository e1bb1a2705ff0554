"""Where model versions live: the local model folder, or an object store (``SLUICE_MODELS_URL``).

A version is stored as ``<store>/<name>/v<version>/<artifact>`` (a file or a folder) and its
SHA-256 digest is recorded in the metadata DB. Models are always loaded from a copy under
``SLUICE_HOME/models`` (pickle-based formats run code when loaded, so only the registry's own
folder is trusted): with an object store the copy is downloaded when it is missing or its
digest differs, and every load checks the digest first, so each replica loads exactly the
bytes that were registered. A location outside the configured store is refused.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path
from typing import Any

from sluice.core.errors import ModelError
from sluice.core.settings import Settings

_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """Hex SHA-256 of one file's bytes."""
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            sha.update(chunk)
    return sha.hexdigest()


def artifact_digest(path: Path) -> str:
    """SHA-256 of a file, or of a folder's ``sha256sum``-style listing (sorted paths)."""
    if path.is_file():
        return file_digest(path)
    lines = [
        f"{file_digest(p)}  {p.relative_to(path).as_posix()}\n"
        for p in sorted(path.rglob("*"))
        if p.is_file()
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _filesystem(url: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(url)


class ArtifactStore:
    """Puts artifacts into the store and hands out verified local copies."""

    def __init__(self, settings: Settings) -> None:
        self.root = settings.models_dir
        self.url = (settings.models_url or "").rstrip("/")

    @property
    def remote(self) -> bool:
        """True when versions live on an object store."""
        return bool(self.url)

    def local_path(self, location: str) -> Path:
        """Where the local copy of a stored location goes (``<name>/v<n>/<artifact>``)."""
        if "://" not in location:
            return self.root / location
        return self.root.joinpath(*location.rstrip("/").split("/")[-3:])

    def put(self, source: Path, name: str, version: int) -> tuple[str, str]:
        """Store ``source`` as ``name`` v``version``; returns (location, digest)."""
        relative = f"{name}/v{version}/{source.name}"
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
        digest = artifact_digest(target)
        if not self.remote:
            return relative, digest
        location = f"{self.url}/{relative}"
        self._transfer(target, location, upload=True)
        return location, digest

    def get(self, location: str, digest: str | None) -> Path:
        """A local copy of ``location`` whose digest is ``digest`` (downloaded when needed)."""
        local = self.root / self._relative(location)
        if "://" not in location:
            if digest is not None and local.exists() and artifact_digest(local) != digest:
                raise ModelError(f"model file {local} changed since it was registered")
            return local
        if local.exists() and (digest is None or artifact_digest(local) == digest):
            return local
        self._download(location, local)
        if digest is not None and artifact_digest(local) != digest:
            raise ModelError(
                f"model artifact {location} does not match the digest recorded at "
                "registration; refusing to load it"
            )
        return local

    def _relative(self, location: str) -> str:
        if "://" not in location:
            return location
        if not self.remote or not location.startswith(self.url + "/"):
            raise ModelError(
                f"model artifact {location} is outside the model store "
                f"{self.url or self.root} (SLUICE_MODELS_URL); Sluice only loads models "
                "from its own store"
            )
        relative = location[len(self.url) + 1 :]
        if ".." in relative.split("/"):
            raise ModelError(f"model artifact {location}: '..' is not allowed")
        return relative

    def _download(self, location: str, local: Path) -> None:
        partial = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.part")
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._transfer(partial, location, upload=False)
            if local.is_dir():
                shutil.rmtree(local)
            partial.replace(local)
        finally:
            if partial.is_dir():
                shutil.rmtree(partial, ignore_errors=True)
            else:
                partial.unlink(missing_ok=True)

    def _transfer(self, local: Path, location: str, *, upload: bool) -> None:
        import pyarrow.fs as pafs

        try:
            remote, path = _filesystem(location)
            here = pafs.LocalFileSystem()
            if upload:
                pafs.copy_files(str(local), path, here, remote)
                return
            info = remote.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                raise ModelError(f"model artifact {location} is missing from the store")
            pafs.copy_files(path, str(local), remote, here)
        except OSError as exc:
            verb = "upload to" if upload else "download"
            raise ModelError(f"cannot {verb} model artifact {location}: {exc}") from exc
