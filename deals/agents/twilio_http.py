"""The Twilio SDK's HTTP client, on httpx with a wall-clock deadline per request.

The SDK's default client (`requests`) applies its timeout to each socket read, so a
server or proxy that drips its answer holds a send for as long as it likes. This one
implements the SDK's `twilio.http.HttpClient` interface with the client of
`deals.framework.http.make_client`: `messenger.timeout_s` bounds the whole request
(connect, headers, body), the response is capped at `MAX_RESPONSE_BYTES`, and a shutdown
abandons a request in flight (`Cancelled`). Failures are httpx exceptions, which
`deals.agents.notifiers.translate_error` maps to transient notify errors.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import httpx
from twilio.http import HttpClient
from twilio.http.response import Response

from deals.framework.http import make_client

MAX_RESPONSE_BYTES = 5_000_000
USER_AGENT = "deals/0.1 (twilio)"


class HttpxTwilioClient(HttpClient):
    """`twilio.http.HttpClient` over httpx: one deadline per request, a capped response."""

    def __init__(self, timeout_s: float, *, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(logger=logging.getLogger("twilio.http_client"), is_async=False, timeout=timeout_s)
        self.client = make_client(timeout_s=timeout_s, user_agent=USER_AGENT, follow_redirects=False, transport=transport)

    def request(
        self,
        method: str,
        url: str,
        params: Mapping[str, object] | None = None,
        data: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        with self.client.stream(
            method.upper(),
            url,
            params=params,  # type: ignore[arg-type]
            data=data,  # type: ignore[arg-type]
            headers=headers,
            auth=auth,
            timeout=timeout or self.timeout,
            follow_redirects=allow_redirects,
        ) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise httpx.DecodingError(f"Twilio answered with more than {MAX_RESPONSE_BYTES} bytes")
            text = bytes(body).decode(response.encoding or "utf-8", errors="replace")
            return Response(response.status_code, text, response.headers)

    def close(self) -> None:
        self.client.close()


__all__ = ["MAX_RESPONSE_BYTES", "HttpxTwilioClient"]
