"""A FastAPI app that defers a welcome e-mail: the app the FastAPI recipe tests."""

from __future__ import annotations

import asyncio

import jumpqueue
from fastapi import FastAPI, HTTPException
from jumpqueue.contrib.starlette import JumpQueueMiddleware

app = FastAPI()
app.add_middleware(JumpQueueMiddleware)

registered = {"taken@example.com"}  # stands for the users table
outbox: list[str] = []  # stands for the mail server


@jumpqueue.task(retries=3, timeout=10)
async def send_welcome_email(address: str) -> None:
    """Send the welcome e-mail."""
    await asyncio.sleep(0)  # stands for the mail server's round trip
    outbox.append(address)


@app.post("/signup", status_code=201)
async def signup(email: str) -> dict[str, str]:
    """201, and the e-mail once the response is sent; 409 if the address is taken."""
    jumpqueue.defer(send_welcome_email, email)  # held until the response is sent
    if email in registered:  # the request fails after defer(): the e-mail is skipped
        raise HTTPException(409, "already registered")
    return {"status": "welcome!"}
