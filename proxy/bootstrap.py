"""First start: with an empty store, make what the proxy needs to work at once (SPEC §2).

One account ("Gateway"), one root CA generated outside the generation limit, available and in
use, and an admin API token. Every start reconciles the admin token with the environment:
``GATEWAY_ADMIN_TOKEN`` replaces any token an earlier value of it stored; without it, a token
from an earlier ``GATEWAY_ADMIN_TOKEN`` is revoked, and a random token is made (and returned
once, for printing) when no admin token is left, which is the case on first start. More tokens:
``gateway token create`` (``proxy.cli.token``), on the machine that holds the data directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from certs.clock import Clock
from proxy.config import ADMIN_TOKEN_ENV, ConfigError
from proxy.services.accounts import (
    add_token,
    authenticate,
    create_account,
    hash_token,
    new_token,
)
from proxy.services.certificates import CertificateService
from proxy.store import Store, TokenOrigin

logger = logging.getLogger(__name__)

DEFAULT_ACCOUNT_NAME = "Gateway"
MIN_TOKEN_LENGTH = 16
FIRST_TOKEN_NAME = "gateway run"  # made at a start that found no admin token (the first one)


@dataclass(frozen=True)
class BootstrapResult:
    account_id: str
    created_account: bool
    new_admin_token: str | None  # shown once; only its hash is stored
    generated_ca_id: str | None


def first_start(
    store: Store, service: CertificateService, *, admin_token_env: str | None, clock: Clock
) -> BootstrapResult:
    """Make the store usable; all of it in one transaction, so a crash leaves nothing half-made."""
    _check_env_token(admin_token_env)
    with store.transaction():
        accounts = store.accounts.list()
        created = not accounts
        account = create_account(store, DEFAULT_ACCOUNT_NAME, clock) if created else accounts[0]
        ca_id = service.install_initial_ca(account.id).id if created else None
        token = _reconcile_admin_token(store, admin_token_env or None, clock)
    if created:
        logger.info("first start: account %s with CA %s in use", account.id, ca_id)
    return BootstrapResult(account.id, created, token, ca_id)


def _check_env_token(token: str | None) -> None:
    if token is None or token == "":
        return
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ConfigError(f"{ADMIN_TOKEN_ENV} holds spaces or control characters: use printable ASCII")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"{ADMIN_TOKEN_ENV} is {len(token)} characters: use at least {MIN_TOKEN_LENGTH} "
            "(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )


def _reconcile_admin_token(store: Store, env_token: str | None, clock: Clock) -> str | None:
    if env_token is not None:
        digest = hash_token(env_token)
        removed = store.tokens.delete_by_origin(TokenOrigin.ENV, keep_sha256=digest)
        if authenticate(store, env_token) is None:
            add_token(store, env_token, TokenOrigin.ENV, clock, name=ADMIN_TOKEN_ENV)
            if removed:
                logger.info("the admin token from %s replaced an earlier one", ADMIN_TOKEN_ENV)
        return None
    if store.tokens.delete_by_origin(TokenOrigin.ENV):
        logger.warning("%s is no longer set: the admin token it provided is revoked", ADMIN_TOKEN_ENV)
    if store.tokens.count():
        return None
    token = new_token()
    add_token(store, token, TokenOrigin.GENERATED, clock, name=FIRST_TOKEN_NAME)
    return token
