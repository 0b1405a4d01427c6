"""Accounts and API tokens: creation, hashing, constant-time authentication, scope.

``AccountService`` is what the accounts API offers an admin: an account made at run time gets
what the first account got at first start (default configuration, its own generated CA,
available and in use, so its devices work at once), all in one transaction; an account is
deleted only when no device is left in it and it is not the gateway's default account.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

from certs.clock import Clock
from proxy.services.errors import Conflict, InvalidInput, NotFound, Refused
from proxy.services.settings import DEFAULT_SETTINGS
from proxy.services.subscribers import Subscribers
from proxy.store import Account, ApiToken, CertificateRecord, Store, TokenOrigin

logger = logging.getLogger(__name__)

MAX_NAME_LENGTH = 100


def create_account(store: Store, name: str, clock: Clock) -> Account:
    """A new account (id: 32 hex characters) with the default Gateway configuration."""
    now = clock()
    account = Account(id=uuid.uuid4().hex, name=name, created_at=now)
    with store.transaction():
        store.accounts.add(account)
        store.configurations.save(account.id, dict(DEFAULT_SETTINGS), now)
    logger.info("created account %s (%s)", account.id, name)
    return account


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_token() -> str:
    """A new admin token (256 random bits, URL-safe base64) that never starts with '-', so that
    ``--token T`` on any command line is read as a value, not as an option."""
    while (token := secrets.token_urlsafe(32)).startswith("-"):
        pass
    return token


def add_token(
    store: Store,
    token: str,
    origin: TokenOrigin,
    clock: Clock,
    *,
    account_id: str | None = None,
    name: str = "",
) -> ApiToken:
    """Store the token's hash (never the token); ``account_id=None``: every account."""
    record = ApiToken(
        id=uuid.uuid4().hex,
        account_id=account_id,
        token_sha256=hash_token(token),
        origin=origin,
        created_at=clock(),
        name=name,
    )
    store.tokens.add(record)
    logger.info(
        "added %s API token %s %r (scope: %s)", origin.value, record.id, name, account_id or "all accounts"
    )
    return record


def authenticate(store: Store, presented: str) -> ApiToken | None:
    """The token whose hash matches, compared in constant time against every stored hash."""
    digest = hash_token(presented)
    found: ApiToken | None = None
    for token in store.tokens.list():
        if hmac.compare_digest(token.token_sha256, digest):
            found = token
    return found


def accounts_for(store: Store, token: ApiToken) -> list[Account]:
    """The accounts ``token`` may act on, oldest first."""
    accounts = store.accounts.list()
    if token.account_id is None:
        return accounts
    return [a for a in accounts if a.id == token.account_id]


def may_use(token: ApiToken, account_id: str) -> bool:
    return token.account_id is None or token.account_id == account_id


def check_name(name: object) -> str:
    """An account name as it will be stored: trimmed, 1-100 printable characters."""
    if name is None:
        raise InvalidInput("name", "required: the account's name (1-100 characters)")
    if not isinstance(name, str):
        raise InvalidInput("name", "must be a string")
    trimmed = name.strip()
    if not trimmed:
        raise InvalidInput("name", "must not be empty")
    if len(trimmed) > MAX_NAME_LENGTH:
        raise InvalidInput("name", f"is {len(trimmed)} characters: use at most {MAX_NAME_LENGTH}")
    if not trimmed.isprintable():
        raise InvalidInput("name", "must hold printable characters only (no control characters)")
    return trimmed


class InitialCa(Protocol):
    """Who makes a new account's first CA (``CertificateService`` fits)."""

    def install_initial_ca(self, account_id: str) -> CertificateRecord: ...


class AccountService:
    """Accounts made and deleted while the gateway runs; subscribers hear of each change after
    its commit (the node makes and drops the account's signer and policies)."""

    def __init__(
        self, store: Store, certificates: InitialCa, clock: Clock, *, default_account_id: str
    ) -> None:
        self._store = store
        self._certificates = certificates
        self._clock = clock
        self.default_account_id = default_account_id
        self._subscribers = Subscribers("account change")

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._subscribers.add(callback)

    def list(self) -> list[Account]:
        """Every account, oldest first."""
        return self._store.accounts.list()

    def transaction(self) -> AbstractContextManager[None]:
        """The store's transaction (several account updates committed at once)."""
        return self._store.transaction()

    def get(self, account_id: str) -> Account:
        account = self._store.accounts.get(account_id)
        if account is None:
            raise NotFound("account", account_id)
        return account

    def create(self, name: object) -> tuple[Account, CertificateRecord]:
        """A new account with its default configuration and its own CA in use; a name another
        account has (compared case-insensitively) is a Conflict."""
        wanted = check_name(name)
        with self._store.transaction():
            clash = next(
                (a for a in self._store.accounts.list() if a.name.casefold() == wanted.casefold()), None
            )
            if clash is not None:
                raise Conflict(
                    f"name: account {clash.id} is already named {clash.name!r}: choose another name"
                )
            account = create_account(self._store, wanted, self._clock)
            ca = self._certificates.install_initial_ca(account.id)
            self._store.after_commit(self._subscribers.notify)
        logger.info("account %s (%s) made with CA %s in use", account.id, account.name, ca.id)
        return account, ca

    def delete(self, account_id: str) -> Account:
        """Delete an account and everything in it; refused for the default account and for an
        account that still has devices (they would lose their gateway without being told)."""
        with self._store.transaction():
            account = self.get(account_id)
            if account_id == self.default_account_id:
                raise Refused(
                    f"account {account_id} ({account.name}) is this gateway's default account (traffic "
                    "from no known device uses it): it cannot be deleted; start the gateway with "
                    "another --default-account first"
                )
            devices = self._store.accounts.device_count(account_id)
            if devices:
                raise Conflict(
                    f"account {account_id} ({account.name}) still has {devices} device"
                    f"{'' if devices == 1 else 's'}: delete them first (gateway device delete --account "
                    f"{account_id} DEVICE), then delete the account"
                )
            self._store.accounts.delete(account_id)
            self._store.after_commit(self._subscribers.notify)
        logger.info("deleted account %s (%s) and everything in it", account_id, account.name)
        return account
