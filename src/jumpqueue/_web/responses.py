"""What `finish_request()` accepts as a response, turned into what a server sends.

A plain tuple `(status, [(name, value), ...], body)` works everywhere; the
frameworks' own response objects are recognised by their shape, so that no
framework is imported here.
"""

from __future__ import annotations

import http
import inspect
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, cast

from .._exceptions import InvalidResponseError

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

Headers = list[tuple[str, str]]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIResponse = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

_ACCEPTED = (
    "a tuple (status: int, headers: list[tuple[str, str]], body: bytes), or a response "
    "object of Starlette/FastAPI, Litestar, Django or Flask/Werkzeug"
)


def plain_response(response: tuple[object, ...]) -> tuple[int, Headers, bytes]:
    """Check a `(status, headers, body)` tuple and return it typed.

    Raises:
        InvalidResponseError: it does not have that shape.
    """
    if len(response) != 3:  # noqa: PLR2004 -- status, headers, body
        raise InvalidResponseError(f"a response tuple has 3 items, not {len(response)}")
    status, headers, body = response
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:  # noqa: PLR2004
        raise InvalidResponseError(f"the status must be an int from 100 to 599, not {status!r}")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise InvalidResponseError(f"the body must be bytes, not {type(body).__name__}")
    if not isinstance(headers, (list, tuple)) or not all(
        isinstance(pair, tuple)
        and len(pair) == 2  # noqa: PLR2004 -- name, value
        and isinstance(pair[0], str)
        and isinstance(pair[1], str)
        for pair in headers
    ):
        raise InvalidResponseError("the headers must be a list of (name: str, value: str) tuples")
    return status, list(cast("Iterable[tuple[str, str]]", headers)), bytes(body)


def status_line(status: int) -> str:
    """`200 OK`: the status as WSGI's `start_response` wants it."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"{status} {phrase}"


def with_content_length(headers: Headers, size: int) -> Headers:
    """The headers with a Content-Length, unless they state the length or framing already."""
    names = {name.lower() for name, _ in headers}
    if "content-length" in names or "transfer-encoding" in names:
        return headers
    return [*headers, ("Content-Length", str(size))]


# -- WSGI --------------------------------------------------------------------------------


def wsgi_response(response: object, environ: WSGIEnvironment) -> tuple[str, Headers, bytes]:
    """Status line, headers and the whole body of a response, for WSGI's `write()`.

    Raises:
        InvalidResponseError: the response is of no kind known here.
    """
    if isinstance(response, tuple):
        status, headers, body = plain_response(response)
        return status_line(status), headers, body
    get_wsgi_response = getattr(response, "get_wsgi_response", None)
    if callable(get_wsgi_response):  # Werkzeug, hence Flask
        app_iter, status_text, header_list = get_wsgi_response(environ)
        return str(status_text), list(header_list), _read(app_iter)
    if _is_django(response):
        django = cast("Any", response)
        return (
            f"{django.status_code} {django.reason_phrase}",
            _django_headers(django),
            _read(django.streaming_content) if django.streaming else bytes(django.content),
        )
    raise InvalidResponseError(f"finish_request() takes {_ACCEPTED}, not {type(response)!r}")


def _read(chunks: Iterable[bytes]) -> bytes:
    try:
        return b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if callable(close):
            close()


# -- ASGI --------------------------------------------------------------------------------


def asgi_response(
    response: object, scope: MutableMapping[str, Any], receive: Receive
) -> ASGIResponse:
    """Return the response as an ASGI application that sends it.

    Raises:
        InvalidResponseError: the response is of no kind known here.
    """
    if isinstance(response, tuple):
        status, headers, body = plain_response(response)
        return _PlainResponse(status, headers, [body])
    to_asgi_response = getattr(response, "to_asgi_response", None)
    if callable(to_asgi_response):  # Litestar: it renders itself for a request
        request = scope["litestar_app"].request_class(scope, receive)
        return cast("ASGIResponse", to_asgi_response(app=None, request=request))
    candidate = cast("Any", response)
    if (
        hasattr(candidate, "status_code")
        and callable(candidate)
        and inspect.iscoroutinefunction(candidate.__call__)
    ):
        return cast("ASGIResponse", candidate)  # Starlette and FastAPI: an ASGI application
    if _is_django(response):
        return _DjangoResponse(cast("Any", response))
    raise InvalidResponseError(f"afinish_request() takes {_ACCEPTED}, not {type(response)!r}")


class _PlainResponse:
    """Sends a status, headers and body chunks as ASGI messages."""

    def __init__(self, status: int, headers: Headers, chunks: list[bytes]) -> None:
        self.status = status
        self.headers = headers
        self.chunks = chunks

    async def __call__(
        self, _scope: MutableMapping[str, Any], _receive: Receive, send: Send
    ) -> None:
        headers = with_content_length(self.headers, sum(len(chunk) for chunk in self.chunks))
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [
                    (name.lower().encode("latin-1"), value.encode("latin-1"))
                    for name, value in headers
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"".join(self.chunks)})


class _DjangoResponse:
    """Sends a Django `HttpResponse` the way Django's ASGI handler does."""

    def __init__(self, response: Any) -> None:
        self.response = response

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        response = self.response
        if response.streaming:
            chunks = [bytes(chunk) async for chunk in response]
        else:
            chunks = [bytes(response.content)]
        await _PlainResponse(response.status_code, _django_headers(response), chunks)(
            scope, receive, send
        )


def _is_django(response: object) -> bool:
    return all(
        hasattr(response, name) for name in ("status_code", "reason_phrase", "items", "cookies")
    )


def _django_headers(response: Any) -> Headers:
    headers: Headers = [(str(name), str(value)) for name, value in response.items()]
    headers.extend(("Set-Cookie", morsel.OutputString()) for morsel in response.cookies.values())
    return headers
