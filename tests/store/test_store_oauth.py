"""Consumers, pairing tokens and nonces as the store keeps them."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import update

from limen.store import Conflict, Invalid
from limen.store.models import OAuthToken
from limen.store.repository import Store
from limen.store.schemas import ConsumerCreate, Permission

MBG_PATHS = ["Base/managetoken/", "/msl/v1/events/", "MBG/mbg/v1/globaloptions/", "/mbg/v1/icps/"]
TTL = dt.timedelta(minutes=15)
YEAR = dt.timedelta(days=365)


def add_consumer(store: Store, name: str = "mv5000") -> str:
    perms = [Permission(path=p, read=True, write=True) for p in MBG_PATHS]
    _record, secret = store.consumers.create(ConsumerCreate(name=name, permissions=perms))
    return secret


def test_consumer_secret_generated_and_permissions_normalised(store: Store) -> None:
    secret = add_consumer(store)
    assert re.fullmatch(r"[0-9a-f]{32}", secret)
    record = store.consumers.get("mv5000")
    assert record.consumer_key == "mv5000"
    assert [p.path for p in record.permissions] == [
        "/managetoken/",
        "/msl/v1/events/",
        "/mbg/v1/globaloptions/",
        "/mbg/v1/icps/",
    ]
    auth = store.consumers.auth("mv5000")
    assert auth is not None and auth.secret == secret and auth.active
    with pytest.raises(Conflict):
        add_consumer(store)


def test_consumer_update_and_delete_takes_tokens_along(store: Store) -> None:
    add_consumer(store)
    store.tokens.create_temporary("mv5000", "t" * 30, "s" * 30, "oob", TTL)
    store.consumers.update("mv5000", active=False, permissions=[Permission(path="/mbg/v1/")])
    auth = store.consumers.auth("mv5000")
    assert auth is not None and not auth.active
    assert [(p.path, p.read, p.write) for p in auth.permissions] == [("/mbg/v1/", True, False)]
    store.consumers.delete("mv5000")
    assert store.tokens.list() == []


def test_pairing_flow_in_the_store(store: Store) -> None:
    add_consumer(store)
    temp = store.tokens.create_temporary("mv5000", "t" * 30, "temp-secret", "oob", TTL)
    assert (temp.kind, temp.status, temp.consumer) == ("temporary", "pending", "mv5000")
    assert [t.token for t in store.tokens.list(status="pending")] == ["t" * 30]
    verifier = store.tokens.approve("t" * 30, actor="admin:root")
    assert re.fullmatch(r"\d{6}", verifier)
    with pytest.raises(Conflict, match="already approved"):
        store.tokens.approve("t" * 30)
    with pytest.raises(Invalid, match="wrong verifier"):
        store.tokens.exchange(
            "mv5000", "t" * 30, "000000" if verifier != "000000" else "1" * 6, "a" * 30, "s", YEAR
        )
    access = store.tokens.exchange("mv5000", "t" * 30, verifier, "a" * 30, "acc-secret", YEAR)
    assert (access.kind, access.status) == ("access", "active")
    assert access.expires_at - access.created_at == YEAR
    with pytest.raises(Conflict, match="used"):
        store.tokens.exchange("mv5000", "t" * 30, verifier, "b" * 30, "x", YEAR)
    state = store.tokens.state("a" * 30)
    assert state is not None and state.secret == "acc-secret"


def test_rejected_and_expired_temporary_tokens(store: Store) -> None:
    add_consumer(store)
    store.tokens.create_temporary("mv5000", "r" * 30, "s", "oob", TTL)
    store.tokens.reject("r" * 30)
    assert store.tokens.get("r" * 30).status == "rejected"
    with pytest.raises(Conflict, match="rejected"):
        store.tokens.approve("r" * 30)
    store.tokens.create_temporary("mv5000", "e" * 30, "s", "oob", dt.timedelta(seconds=-1))
    assert store.tokens.get("e" * 30).expired
    with pytest.raises(Conflict, match="expired"):
        store.tokens.approve("e" * 30)
    assert store.tokens.purge_expired_temporary() == 1


def test_renew_extends_a_final_token_even_after_expiry(store: Store) -> None:
    add_consumer(store)
    store.tokens.create_temporary("mv5000", "t" * 30, "s", "oob", TTL)
    verifier = store.tokens.approve("t" * 30)
    store.tokens.exchange("mv5000", "t" * 30, verifier, "a" * 30, "s", YEAR)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    with store.sessions() as s, s.begin():
        s.execute(update(OAuthToken).where(OAuthToken.token == "a" * 30).values(expires_at=past))
    assert store.tokens.get("a" * 30).expired
    renewed = store.tokens.renew("a" * 30, YEAR)
    assert not renewed.expired and renewed.renewed_at is not None
    assert renewed.expires_at > dt.datetime.now(dt.UTC) + YEAR - dt.timedelta(minutes=1)
    with pytest.raises(Invalid):
        store.tokens.renew("t" * 30, YEAR)


def test_a_nonce_is_accepted_once(store: Store) -> None:
    assert store.nonces.use("mv5000", "n0nce123", 1700000000, "a" * 30, 600)
    assert not store.nonces.use("mv5000", "n0nce123", 1700000000, "a" * 30, 600)
    assert store.nonces.use("mv5000", "n0nce123", 1700000001, "a" * 30, 600)
    assert store.nonces.use("other", "n0nce123", 1700000000, "a" * 30, 600)
