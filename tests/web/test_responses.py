"""What finish_request() accepts as a response, and how it is turned into bytes for a server."""

from __future__ import annotations

import pytest

from jumpqueue import InvalidResponseError
from jumpqueue._web.responses import plain_response, status_line, with_content_length, wsgi_response

from .fakes import wsgi_environ


def test_responses_plain_tuple_is_checked_and_typed() -> None:
    status, headers, body = plain_response((200, [("A", "b")], bytearray(b"x")))
    assert (status, headers, body) == (200, [("A", "b")], b"x")
    assert type(body) is bytes


@pytest.mark.parametrize(
    ("response", "message"),
    [
        ((200, []), "3 items"),
        ((True, [], b""), "status"),
        ((99, [], b""), "status"),
        ((600, [], b""), "status"),
        (("200", [], b""), "status"),
        ((200, [], "text"), "body must be bytes"),
        ((200, {"A": "b"}, b""), "headers"),
        ((200, [("A",)], b""), "headers"),
        ((200, [("A", 1)], b""), "headers"),
    ],
)
def test_responses_plain_tuple_of_the_wrong_shape_is_refused(
    response: tuple[object, ...], message: str
) -> None:
    with pytest.raises(InvalidResponseError, match=message):
        plain_response(response)


def test_responses_invalid_response_error_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        plain_response(("nope",))


def test_responses_status_line_names_known_and_unknown_statuses() -> None:
    assert status_line(200) == "200 OK"
    assert status_line(503) == "503 Service Unavailable"
    assert status_line(299) == "299 Unknown"


def test_responses_content_length_is_added_only_when_nothing_frames_the_body() -> None:
    assert with_content_length([], 3) == [("Content-Length", "3")]
    assert with_content_length([("content-length", "3")], 3) == [("content-length", "3")]
    chunked = [("Transfer-Encoding", "chunked")]
    assert with_content_length(chunked, 3) == chunked


def test_responses_wsgi_refuses_an_unknown_object() -> None:
    with pytest.raises(InvalidResponseError, match="finish_request"):
        wsgi_response(object(), wsgi_environ())
