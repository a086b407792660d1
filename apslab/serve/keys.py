"""Per-tenant API keys for the live service, stored only as salted hashes.

A key looks like ``sk-aps-3f9a0c1d-<43 random characters>``: a public key id (8 hex digits) and
a secret of 256 random bits (:func:`secrets.token_urlsafe`). What is stored, in a keys file or
in the ``APSLAB_API_KEYS`` environment variable, is the tenant, the key id and
``pbkdf2_sha256$<iterations>$<salt>$<hash>``: PBKDF2-HMAC-SHA256 of the whole key with a random
16-byte salt of its own. The key itself is printed once, when it is made, and never stored.

A presented key is looked up by its id and its hash recomputed and compared with
:func:`hmac.compare_digest` (constant time); an unknown id costs the same hashing, so timing does
not say which ids exist. Because a key is 256 random bits, it is the key's entropy, not a slow
hash, that makes it unguessable: the default is 1,000 PBKDF2 iterations (about 0.4 ms), so a
wrong key costs the server little; the salt and hash make a leaked keys file useless. A key that
verified is remembered (by its SHA-256) so each client pays the hashing once per process.

The keys file is TOML (or JSON with the same structure)::

    # apslab API keys: salted hashes only
    [[keys]]
    tenant = "premium"
    id = "3f9a0c1d"
    hash = "pbkdf2_sha256$1000$...$..."

``APSLAB_API_KEYS`` holds comma-separated ``tenant:id:hash`` entries (what ``add`` prints).

    python -m apslab.serve.keys add TENANT --keys KEYS.toml     (or: apslab keys add ...)
    python -m apslab.serve.keys list --keys KEYS.toml
    python -m apslab.serve.keys remove KEY_ID --keys KEYS.toml
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..io.errors import InputError

try:
    import tomli as toml_reader
except ImportError:  # pragma: no cover - the standard library's parser, the same format
    import tomllib as toml_reader

ENV_VAR = "APSLAB_API_KEYS"
PREFIX = "sk-aps-"
ALGORITHM = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 1_000
_ID = re.compile(r"[0-9a-f]{8}")
_CACHE_LIMIT = 4096


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_key(key: str, salt: bytes, iterations: int) -> str:
    """The stored form of ``key``: ``pbkdf2_sha256$<iterations>$<salt>$<hash>``."""
    digest = hashlib.pbkdf2_hmac("sha256", key.encode(), salt, iterations)
    return f"{ALGORITHM}${iterations}${_b64(salt)}${_b64(digest)}"


def key_id_of(key: str) -> str | None:
    """The public id inside a key, or None if it is not shaped like one."""
    if not key.startswith(PREFIX) or len(key) < len(PREFIX) + 10:
        return None
    key_id = key[len(PREFIX):len(PREFIX) + 8]
    if not _ID.fullmatch(key_id) or key[len(PREFIX) + 8] != "-":
        return None
    return key_id


@dataclass(frozen=True)
class KeyEntry:
    """One stored key: its tenant, its public id, and the salted hash of the whole key."""

    tenant: str
    key_id: str
    hash: str

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.key_id):
            raise ValueError(f"key id must be 8 hex digits, got {self.key_id!r}")
        self.parts()  # a malformed hash is an error now, not at the first request

    def parts(self) -> tuple[int, bytes, bytes]:
        """(iterations, salt, digest)."""
        try:
            algorithm, iterations, salt, digest = self.hash.split("$")
            if algorithm != ALGORITHM or not iterations.isdigit() or int(iterations) < 1:
                raise ValueError
            return int(iterations), _unb64(salt), _unb64(digest)
        except ValueError:
            raise ValueError(f"key {self.key_id}: hash must be "
                             f"'{ALGORITHM}$<iterations>$<salt>$<hash>'") from None

    def env_entry(self) -> str:
        """This key as one entry of ``APSLAB_API_KEYS``."""
        return f"{self.tenant}:{self.key_id}:{self.hash}"


def new_key(tenant: str, iterations: int = DEFAULT_ITERATIONS) -> tuple[str, KeyEntry]:
    """A fresh random key for ``tenant`` and its stored entry (the key is not kept anywhere)."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    key_id = secrets.token_hex(4)
    key = f"{PREFIX}{key_id}-{secrets.token_urlsafe(32)}"
    return key, KeyEntry(tenant, key_id, hash_key(key, secrets.token_bytes(16), iterations))


def generate_keys(tenants: Iterable[str], iterations: int = DEFAULT_ITERATIONS
                  ) -> tuple[dict[str, str], KeyStore]:
    """A fresh key for each tenant and a store of their hashes: for a notebook or a test that
    starts a service in-process (the keys live only in memory)."""
    keys, entries = {}, []
    for tenant in tenants:
        keys[tenant], entry = new_key(tenant, iterations)
        entries.append(entry)
    return keys, KeyStore(entries, "<generated>")


class KeyStore:
    """The configured keys: which tenant a presented bearer key belongs to, if any."""

    def __init__(self, entries: Iterable[KeyEntry], source: str = "<keys>") -> None:
        self.source = source
        self.entries: dict[str, KeyEntry] = {}
        for entry in entries:
            if entry.key_id in self.entries:
                raise InputError(f"{source}: key id {entry.key_id} appears twice")
            self.entries[entry.key_id] = entry
        # A stand-in so that an unknown id costs the same hashing as a known one.
        self._decoy = KeyEntry("", "00000000", hash_key("", b"\0" * 16, DEFAULT_ITERATIONS))
        self._verified: dict[bytes, str] = {}

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def tenants(self) -> list[str]:
        return sorted({entry.tenant for entry in self.entries.values()})

    def tenant_for(self, key: str) -> str | None:
        """The tenant whose key this is, or None (constant-time comparison of the hashes)."""
        fingerprint = hashlib.sha256(key.encode(errors="surrogatepass")).digest()
        tenant = self._verified.get(fingerprint)
        if tenant is not None:
            return tenant
        key_id = key_id_of(key)
        entry = self.entries.get(key_id) if key_id else None
        iterations, salt, digest = (entry or self._decoy).parts()
        presented = hashlib.pbkdf2_hmac("sha256", key.encode(errors="surrogatepass"), salt,
                                        iterations)
        if not hmac.compare_digest(presented, digest) or entry is None:
            return None
        if len(self._verified) >= _CACHE_LIMIT:
            self._verified.clear()
        self._verified[fingerprint] = entry.tenant
        return entry.tenant

    def check_tenants(self, tenant_ids: Sequence[str]) -> None:
        """InputError if a key names a tenant the scenario does not have."""
        unknown = sorted({e.tenant for e in self.entries.values()} - set(tenant_ids))
        if unknown:
            raise InputError(f"{self.source}: keys for tenants not in the scenario: "
                             f"{', '.join(map(repr, unknown))} (tenants: "
                             f"{', '.join(map(repr, tenant_ids))})")

    # -- loading ----------------------------------------------------------------------------

    @classmethod
    def from_text(cls, text: str, source: str) -> KeyStore:
        """A keys file's text: TOML, or JSON of the same structure."""
        try:
            data = json.loads(text) if text.lstrip().startswith("{") else toml_reader.loads(text)
        except (ValueError, toml_reader.TOMLDecodeError) as exc:
            raise InputError(f"{source}: not a keys file (TOML or JSON): {exc}") from None
        raw = data.get("keys", []) if isinstance(data, dict) else None
        if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
            raise InputError(f"{source}: expected [[keys]] tables (tenant, id, hash)")
        entries = []
        for number, item in enumerate(raw, start=1):
            if set(item) != {"tenant", "id", "hash"} or not all(
                    isinstance(value, str) for value in item.values()):
                raise InputError(f"{source}: key #{number} must have exactly the strings "
                                 f"tenant, id and hash, got {sorted(item)}")
            try:
                entries.append(KeyEntry(item["tenant"], item["id"], item["hash"]))
            except ValueError as exc:
                raise InputError(f"{source}: key #{number}: {exc}") from None
        return cls(entries, source)

    @classmethod
    def from_env_value(cls, value: str, source: str = ENV_VAR) -> KeyStore:
        """``tenant:id:hash`` entries separated by commas (tenant ids never hold a comma)."""
        entries = []
        for number, item in enumerate((p.strip() for p in value.split(",")), start=1):
            if not item:
                continue
            tenant, _, rest = item.rpartition(":")
            tenant, _, key_id = tenant.rpartition(":")
            try:
                if not tenant:
                    raise ValueError("expected tenant:id:hash")
                entries.append(KeyEntry(tenant, key_id, rest))
            except ValueError as exc:
                raise InputError(f"{source}: entry #{number}: {exc}") from None
        return cls(entries, source)

    @classmethod
    def configured(cls, path: str | Path | None = None,
                   environ: Mapping[str, str] | None = None) -> KeyStore | None:
        """The keys from ``path`` and/or ``$APSLAB_API_KEYS``; None when neither gives any
        (the service then runs unauthenticated)."""
        environ = os.environ if environ is None else environ
        stores = []
        if path is not None:
            path = Path(path)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise InputError(f"--keys {path}: cannot read it ({exc.strerror})") from None
            stores.append(cls.from_text(text, str(path)))
        if environ.get(ENV_VAR, "").strip():
            stores.append(cls.from_env_value(environ[ENV_VAR]))
        entries = [e for store in stores for e in store.entries.values()]
        if not entries:
            if path is not None:
                raise InputError(f"--keys {path}: the file holds no keys")
            return None
        return cls(entries, " and ".join(store.source for store in stores))


# --------------------------------------------------------------------------------------------
# The keys file


HEADER = ("# apslab API keys: salted PBKDF2-HMAC-SHA256 hashes only; the keys themselves are\n"
          "# never stored. Add one with `apslab keys add TENANT --keys FILE`.\n")


def write_keys_file(path: str | Path, entries: Iterable[KeyEntry]) -> None:
    """Write a keys file (TOML), readable by its owner only."""
    lines = [HEADER]
    for entry in entries:
        lines.append(f"[[keys]]\ntenant = {json.dumps(entry.tenant)}\nid = \"{entry.key_id}\"\n"
                     f"hash = \"{entry.hash}\"\n")
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    os.replace(temporary, path)


def _load_entries(path: Path) -> list[KeyEntry]:
    if not path.exists():
        return []
    return list(KeyStore.from_text(path.read_text(encoding="utf-8"), str(path)).entries.values())


def register(subparsers) -> None:
    """``apslab keys``: add, list and remove API keys in a keys file."""
    parser = subparsers.add_parser(
        "keys", help="manage the live service's per-tenant API keys (salted hashes)",
        description=DESCRIPTION)
    _add_actions(parser)


DESCRIPTION = ("Manage a keys file for `apslab serve --keys FILE`. `add` prints the new key "
               "once; only its salted hash is stored.")


def _add_actions(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="make a new key for TENANT and print it once")
    add.add_argument("tenant", metavar="TENANT")
    add.add_argument("--keys", required=True, metavar="KEYS.toml",
                     help="the keys file (created if missing)")
    add.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS,
                     help=f"PBKDF2 iterations (default {DEFAULT_ITERATIONS})")
    listing = actions.add_parser("list", help="the tenants and key ids in a keys file")
    listing.add_argument("--keys", required=True, metavar="KEYS.toml")
    remove = actions.add_parser("remove", help="delete a key by its id")
    remove.add_argument("key_id", metavar="KEY_ID")
    remove.add_argument("--keys", required=True, metavar="KEYS.toml")
    parser.set_defaults(func=run_keys)


def run_keys(args: argparse.Namespace) -> int:
    path = Path(args.keys)
    entries = _load_entries(path)
    if args.action == "add":
        if not args.tenant.strip() or "," in args.tenant or args.iterations < 1:
            raise InputError("keys add: TENANT must be a non-empty tenant id without commas and "
                             "--iterations >= 1")
        key, entry = new_key(args.tenant, args.iterations)
        write_keys_file(path, [*entries, entry])
        print(f"new key for tenant {args.tenant!r} (id {entry.key_id}), shown this once:\n"
              f"  {key}\n"
              f"stored in {path} as a salted hash; as an {ENV_VAR} entry:\n"
              f"  {entry.env_entry()}")
    elif args.action == "list":
        for entry in entries:
            print(f"{entry.key_id}  {entry.tenant}")
    else:
        kept = [e for e in entries if e.key_id != args.key_id]
        if len(kept) == len(entries):
            raise InputError(f"{path}: no key with id {args.key_id!r}")
        write_keys_file(path, kept)
        print(f"removed key {args.key_id} from {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apslab.serve.keys", description=DESCRIPTION)
    _add_actions(parser)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"python -m apslab.serve.keys: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
