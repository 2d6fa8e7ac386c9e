"""A FastAPI and a Starlette app tested with Starlette's TestClient, with and without `with`.

Written as an application's own suite is: no fixture resets jumpqueue between
tests, and no conftest. Every test must pass whatever ran before it, so
`tests/web/test_user_suite.py` runs them in several orders. (Not collected by
the project's suite: the file name does not start with `test_`.)
"""

from __future__ import annotations

import asyncio
import threading
import warnings

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import jumpqueue
from jumpqueue.contrib.starlette import JumpQueueMiddleware

with warnings.catch_warnings():
    # Starlette's test client warns that it prefers httpx2 to httpx.
    warnings.filterwarnings("ignore", message=".*httpx2")
    from starlette.testclient import TestClient

sent: list[str] = []
recorded = threading.Event()


async def send_welcome_email(address: str) -> None:
    await asyncio.sleep(0.01)  # the mail server's round trip
    sent.append(address)


def record_signup(address: str) -> None:
    sent.append(f"{address} (recorded)")
    recorded.set()


fastapi_app = FastAPI()
fastapi_app.add_middleware(JumpQueueMiddleware)


@fastapi_app.post("/signup")
async def fastapi_signup(email: str) -> dict[str, str]:
    jumpqueue.defer(send_welcome_email, email)
    return {"status": "welcome"}


@fastapi_app.post("/signup-sync")
def fastapi_signup_sync(email: str) -> dict[str, str]:
    jumpqueue.defer(record_signup, email)
    return {"status": "welcome"}


async def starlette_signup(request: Request) -> PlainTextResponse:
    jumpqueue.defer(send_welcome_email, request.query_params["email"])
    return PlainTextResponse("welcome")


starlette_app = Starlette(
    routes=[Route("/signup", starlette_signup, methods=["POST"])],
    middleware=[Middleware(JumpQueueMiddleware)],
)


def test_fastapi_signup_with_lifespan() -> None:
    with TestClient(fastapi_app) as client:
        assert client.post("/signup", params={"email": "fastapi-with@example.com"}).is_success
    assert "fastapi-with@example.com" in sent  # the lifespan's shutdown drained the call


def test_fastapi_signup_without_lifespan() -> None:
    client = TestClient(fastapi_app)
    assert client.post("/signup", params={"email": "fastapi-bare@example.com"}).is_success
    assert "fastapi-bare@example.com" in sent


def test_fastapi_sync_signup_without_lifespan() -> None:
    client = TestClient(fastapi_app)
    assert client.post("/signup-sync", params={"email": "sync@example.com"}).is_success
    assert recorded.wait(5)  # a plain function runs on the thread pool, after the response
    assert "sync@example.com (recorded)" in sent


def test_starlette_signup_with_lifespan() -> None:
    with TestClient(starlette_app) as client:
        assert client.post("/signup?email=starlette-with@example.com").is_success
    assert "starlette-with@example.com" in sent


def test_starlette_signup_without_lifespan() -> None:
    client = TestClient(starlette_app)
    assert client.post("/signup?email=starlette-bare@example.com").is_success
    assert "starlette-bare@example.com" in sent


def test_defer_outside_any_request() -> None:
    assert jumpqueue.defer(send_welcome_email, "direct@example.com").result(timeout=5) is None
    assert "direct@example.com" in sent
