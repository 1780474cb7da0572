"""Who may do what on the edge service: bearer tokens mapped to one role each.

Why roles and not one shared secret: a camera that is stolen or compromised must not be able
to read other cameras' frames, rewrite detections or delete anything; the analytics box must
read only the analytics layers (so the "analytics reads only the analytics point" figure
cannot be falsified by a header); only an administrator deletes. Tokens come from a file
(``--tokens-file``) or an environment variable, never from command-line arguments (visible to
every user in ``ps``).

Tokens file (JSON, readable by the service's user only)::

    {"tokens": [
      {"name": "lobby-cam", "role": "camera", "cameras": ["lobby"], "token": "..."},
      {"name": "bench", "role": "camera", "cameras": ["bench-*"], "sha256": "<hex>"},
      {"name": "worker", "role": "analytics", "token": "..."},
      {"name": "alice", "role": "viewer", "token": "..."},
      {"name": "ops", "role": "admin", "token": "..."}
    ]}

``sha256`` (hex digest of the token) may stand in for ``token`` so the file holds no secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from vcm_plugin.codec.files import write_atomic
from vcm_plugin.errors import VCMError

#: Environment variables: the service's tokens file, and a client's own token (or its file).
TOKENS_FILE_ENV = "VCM_EDGE_TOKENS_FILE"
TOKEN_ENV = "VCM_EDGE_TOKEN"
TOKEN_FILE_ENV = "VCM_EDGE_TOKEN_FILE"
MIN_TOKEN_CHARS = 16
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")
_CAM_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}\*?|\*")


class Role(StrEnum):
    CAMERA = "camera"  # upload its own cameras' frames, answer texture requests
    ANALYTICS = "analytics"  # claim frames, read their analytics layers, write detections
    VIEWER = "viewer"  # read everything (any layer, images, detections, the index)
    ADMIN = "admin"  # what a viewer may, plus delete, retention and metrics


@dataclass(frozen=True)
class Principal:
    """The caller of one request. ``roles`` is every role in open mode (no tokens, loopback
    only); ``cameras`` are the camera ids (``prefix*`` patterns) a camera token may write."""

    name: str
    roles: frozenset[Role]
    cameras: tuple[str, ...] = ()
    authenticated: bool = True

    def has(self, *roles: Role) -> bool:
        return not self.roles.isdisjoint(roles)

    def owns(self, cam: str) -> bool:
        """May this caller write (and read the upload state of) camera ``cam``?"""
        if not self.authenticated:
            return True
        return Role.CAMERA in self.roles and any(
            p == "*" or p == cam or (p.endswith("*") and cam.startswith(p[:-1]))
            for p in self.cameras
        )

    @property
    def reads_texture(self) -> bool:
        """Viewers and admins read every layer; analytics only the analytics layers."""
        return self.has(Role.VIEWER, Role.ADMIN)


def open_principal(name: str) -> Principal:
    """Open mode (no tokens configured): the caller may do anything; its name for the byte
    accounting is the client's own, unauthenticated ``X-VCM-Client`` label."""
    return Principal(name, frozenset(Role), ("*",), authenticated=False)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class TokenTable:
    """Token digests -> principals. Lookup hashes the presented token and compares digests
    in constant time, so neither timing nor the file reveals a token."""

    entries: dict[str, Principal] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TokenTable:
        path = Path(path)
        try:
            raw = path.read_text()
        except OSError as exc:
            raise VCMError(f"cannot read tokens file {path}: {exc.strerror or exc}") from None
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise VCMError(f"tokens file {path} is not JSON: {exc}") from None
        # judged on the parsed document, so no spelling ("\u0074oken") slips past a text match
        entries = doc.get("tokens") if isinstance(doc, dict) else None
        plain = isinstance(entries, list) and any(
            isinstance(e, dict) and "token" in e for e in entries
        )
        if plain and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise VCMError(
                f"tokens file {path} holds tokens and is readable by other users: "
                f"chmod 600 {path} (or store sha256 digests instead of tokens)"
            )
        return cls.parse(doc, str(path))

    @classmethod
    def parse(cls, doc: object, where: str = "tokens") -> TokenTable:
        items = doc.get("tokens") if isinstance(doc, dict) else None
        if not isinstance(items, list) or not items:
            raise VCMError(
                f'{where}: expected {{"tokens": [{{"name", "role", "token"}}, '
                "...]} with at least one entry"
            )
        table, names = cls(), set()
        for i, item in enumerate(items):
            table._add(item, f"{where}: entry {i}", names)
        return table

    def _add(self, item: object, where: str, names: set[str]) -> None:
        if not isinstance(item, dict):
            raise VCMError(f"{where} is not an object")
        name, role = item.get("name"), item.get("role")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise VCMError(f"{where}: name must be 1-32 letters, digits, '_', '.' or '-'")
        if name in names:
            raise VCMError(f"{where}: name {name!r} is used twice")
        names.add(name)
        try:
            role = Role(role)
        except ValueError:
            raise VCMError(
                f"{where} ({name}): role must be one of "
                f"{', '.join(r.value for r in Role)}, got {role!r}"
            ) from None
        cameras = item.get("cameras", [])
        if role is Role.CAMERA:
            if (
                not isinstance(cameras, list)
                or not cameras
                or not all(isinstance(c, str) and _CAM_PATTERN.fullmatch(c) for c in cameras)
            ):
                raise VCMError(
                    f'{where} ({name}): a camera token needs "cameras": a list '
                    "of camera ids (a trailing * matches a prefix)"
                )
        elif cameras:
            raise VCMError(f'{where} ({name}): only camera tokens have "cameras"')
        token, digest = item.get("token"), item.get("sha256")
        if (token is None) == (digest is None):
            raise VCMError(f'{where} ({name}): give exactly one of "token" or "sha256"')
        if token is not None:
            if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS or not token.isascii():
                raise VCMError(
                    f"{where} ({name}): a token must be at least {MIN_TOKEN_CHARS} "
                    "ASCII characters (vcm edge token makes one)"
                )
            digest = _digest(token)
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise VCMError(f"{where} ({name}): sha256 must be 64 lower-case hex digits")
        if digest in self.entries:
            raise VCMError(f"{where} ({name}): the same token is listed twice")
        self.entries[digest] = Principal(name, frozenset({role}), tuple(cameras))

    def lookup(self, token: str) -> Principal | None:
        presented = _digest(token)
        found = None
        for digest, principal in self.entries.items():  # no early exit: constant time
            if hmac.compare_digest(digest, presented):
                found = principal
        return found


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def client_token(token_file: str | os.PathLike[str] | None = None) -> str | None:
    """A client's token: ``--token-file``, else ``$VCM_EDGE_TOKEN_FILE``, else
    ``$VCM_EDGE_TOKEN``; None when there is none (an open, loopback-only service)."""
    path = token_file or os.environ.get(TOKEN_FILE_ENV)
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise VCMError(f"cannot read token file {path}: {exc.strerror or exc}") from None
        if not token:
            raise VCMError(f"token file {path} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def add_token(
    path: str | os.PathLike[str], name: str, role: str, cameras: list[str] | None = None
) -> str:
    """Create a token, add its sha256 digest to the tokens file (made mode 600 if new) and
    return it: the file never holds the token itself, so a copy or backup of it lets no one
    in (issue 27, item 6); the caller shows the token once."""
    path = Path(path)
    doc = {"tokens": []}
    if path.exists():
        TokenTable.load(path)  # refuse to extend a broken or world-readable file
        doc = json.loads(path.read_text())
    token = secrets.token_urlsafe(32)
    entry = {"name": name, "role": role, "sha256": _digest(token)}
    if cameras:
        entry["cameras"] = list(cameras)
    doc["tokens"].append(entry)
    TokenTable.parse(doc, str(path))  # the new entry is checked before anything is written
    write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o600)
    return token
