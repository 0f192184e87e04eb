"""Prolific's REST API (https://docs.prolific.com/api-reference), spoken over plain HTTP with JSON.

Every request carries `Authorization: Token <PROLIFIC_API_TOKEN>`. Rate limits (429), server errors (5xx)
and timeouts are retried by tenacity with exponential backoff, but only where a repeat cannot act twice: a
call that creates something or pays (`Retry.RATE_LIMIT`) is retried on 429 alone, which Prolific answers
before doing anything. Every failure is a ProviderError that names the call (method and path), so the
requester sees which call failed; `ambiguous` says whether it may have gone through (a timeout, a 5xx).
"""

from __future__ import annotations

import enum
import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin

from django.conf import settings
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from annotate.providers.base import ProviderError

MESSAGE_MAX = 300
"""The most of Prolific's error text a message quotes."""


class Retry(enum.Enum):
    """Which failures a call may be repeated after."""

    TRANSIENT = "transient"  # 429, 5xx, timeouts: the call is idempotent (reads, transitions, group adds)
    RATE_LIMIT = "rate_limit"  # 429 only: a repeat of a call that went through would act twice


class ProlificError(ProviderError):
    """A failed Prolific call: `call` is "METHOD /path/", `status` the HTTP status (None: no answer), and
    `ambiguous` whether the call may have gone through anyway."""

    def __init__(self, call: str, reason: str, *, status: int | None, attempts: int) -> None:
        self.call = call
        self.status = status
        self.attempts = attempts
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"Prolific {call} failed{tries}: {reason}")

    @property
    def ambiguous(self) -> bool:
        return self.status is None or self.status >= 500

    @property
    def transient(self) -> bool:
        return self.ambiguous or self.status == 429


@dataclass
class ProlificAPI:
    """One Prolific account's API: `base_url` ends in /api/v1/ (tests point it at a local fake)."""

    token: str
    base_url: str
    timeout: float
    attempts: int = 4
    backoff: float = 1.0

    @classmethod
    def from_settings(cls) -> ProlificAPI:
        return cls(
            token=settings.PROLIFIC_API_TOKEN,
            base_url=settings.PROLIFIC_API_URL,
            timeout=settings.PROLIFIC_TIMEOUT_S,
            attempts=max(1, settings.PROLIFIC_ATTEMPTS),
            backoff=settings.PROLIFIC_BACKOFF_S,
        )

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, Any] | None = None,
        retry: Retry = Retry.TRANSIENT,
    ) -> Any:
        """Send one request (repeated as `retry` allows) and return its decoded JSON body (None if empty)."""
        if not self.token:
            raise ProviderError("Prolific: PROLIFIC_API_TOKEN is not set")
        url = urljoin(self.base_url.rstrip("/") + "/", path.lstrip("/"))
        if query:
            url += "?" + urlencode(query)
        call = f"{method} /{path.lstrip('/')}"
        data = None if body is None else json.dumps(body).encode()

        def repeatable(exc: BaseException) -> bool:
            if not isinstance(exc, ProlificError):
                return False
            return exc.status == 429 if retry is Retry.RATE_LIMIT else exc.transient

        attempt = 0

        def once() -> Any:
            nonlocal attempt
            attempt += 1
            return self._send(method, url, call, data, attempt)

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.backoff, max=30),
            retry=retry_if_exception(repeatable),
            reraise=True,
        )
        return retrying(once)

    def _send(self, method: str, url: str, call: str, data: bytes | None, attempt: int) -> Any:
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Token {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            raise ProlificError(
                call, f"{exc.code} {_reason(text) or exc.reason}", status=exc.code, attempts=attempt
            ) from exc
        except TimeoutError as exc:
            raise ProlificError(
                call, f"no answer within {self.timeout:g} s", status=None, attempts=attempt
            ) from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                reason = f"no answer within {self.timeout:g} s"
            else:
                reason = f"could not connect ({exc.reason})"
            raise ProlificError(call, reason, status=None, attempts=attempt) from exc
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")


def _reason(text: str) -> str:
    """Prolific's explanation in an error body (its `error.detail`, `detail` or the raw text), shortened."""
    try:
        body = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:MESSAGE_MAX]
    if isinstance(body, dict):
        found = body.get("error", body)
        if isinstance(found, dict):
            found = found.get("detail", found.get("title", found))
        return " ".join(str(found).split())[:MESSAGE_MAX]
    return " ".join(str(body).split())[:MESSAGE_MAX]
