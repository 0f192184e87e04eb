"""Login throttling (django-axes): wrong passwords through the login form lock that username out from that
address, the right password included, with a lockout page that says so; other addresses and other usernames
are not locked; a success resets the count; behind a proxy, forging X-Forwarded-For does not escape."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.factories import STAFF_PASSWORD, staff_user

LIMIT = 10


@pytest.fixture
def requester(django_user_model: Any) -> Any:
    return staff_user(django_user_model, "boss")


def _log_in(client: Client, password: str, username: str = "boss", **headers: str) -> Any:
    return client.post("/accounts/login/", {"username": username, "password": password}, **headers)


def test_repeated_wrong_passwords_lock_out_the_username_from_that_address(
    requester: Any, settings: Any
) -> None:
    assert settings.AXES_FAILURE_LIMIT == LIMIT
    attacker = Client()
    for _ in range(LIMIT - 1):
        assert _log_in(attacker, "guess").status_code == 200  # the form again, with its error
    locked = _log_in(attacker, "guess")
    assert locked.status_code == 429 and b"Too many login attempts" in locked.content
    right = _log_in(attacker, STAFF_PASSWORD)
    assert right.status_code == 429 and b"Too many login attempts" in right.content
    assert attacker.get("/").status_code == 302  # not logged in
    elsewhere = _log_in(Client(), STAFF_PASSWORD, REMOTE_ADDR="198.51.100.7")
    assert elsewhere.status_code == 302 and elsewhere.url == "/"


def test_the_lockout_is_per_username(requester: Any, django_user_model: Any) -> None:
    staff_user(django_user_model, "colleague")
    client = Client()
    for _ in range(LIMIT):
        _log_in(client, "guess")
    assert _log_in(client, STAFF_PASSWORD).status_code == 429
    assert _log_in(client, STAFF_PASSWORD, username="colleague").status_code == 302


def test_a_success_resets_the_count(requester: Any) -> None:
    client = Client()
    for _ in range(LIMIT - 1):
        _log_in(client, "typo")
    assert _log_in(client, STAFF_PASSWORD).status_code == 302
    client.post("/accounts/logout/")
    for _ in range(LIMIT - 1):
        _log_in(client, "typo")
    assert _log_in(client, STAFF_PASSWORD).status_code == 302


def test_behind_a_proxy_a_forged_forwarded_for_does_not_escape(requester: Any, settings: Any) -> None:
    settings.PROXY_COUNT = 1
    attacker = Client(REMOTE_ADDR="10.0.0.2")  # the proxy; it appends the address it saw last
    for n in range(LIMIT):
        _log_in(attacker, "guess", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 203.0.113.9")
    assert (
        _log_in(attacker, STAFF_PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.200, 203.0.113.9").status_code == 429
    )
    colleague = _log_in(Client(REMOTE_ADDR="10.0.0.2"), STAFF_PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.50")
    assert colleague.status_code == 302


def test_the_test_clients_login_still_works(requester: Any) -> None:
    client = Client()
    assert client.login(username="boss", password=STAFF_PASSWORD)
    assert client.get("/").status_code == 200
    assert not Client().login(username="boss", password="wrong")
