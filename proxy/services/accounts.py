"""Accounts and API tokens: creation, hashing, constant-time authentication, scope."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid

from certs.clock import Clock
from proxy.services.settings import DEFAULT_SETTINGS
from proxy.store import Account, ApiToken, Store, TokenOrigin

logger = logging.getLogger(__name__)


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
    return secrets.token_urlsafe(32)


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
