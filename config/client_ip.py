"""The client's address for the throttles, the same rule for every one of them.

Directly exposed, it is REMOTE_ADDR. Behind BEHIND_PROXY with PROXY_COUNT proxies, each proxy appends the
address it received from to X-Forwarded-For, so the client is the entry PROXY_COUNT places from the right;
entries further left come from the client and are not trusted. A header shorter than that (a request that
bypassed a proxy) falls back to REMOTE_ADDR.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    remote = str(request.META.get("REMOTE_ADDR", ""))
    count = settings.PROXY_COUNT
    if count < 1:
        return remote
    hops = [
        hop.strip() for hop in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",") if hop.strip()
    ]
    return hops[-count] if len(hops) >= count else remote
