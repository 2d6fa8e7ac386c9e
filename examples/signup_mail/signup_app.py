"""A FastAPI sign-up that sends its welcome mail over SMTP once the response is sent."""

from __future__ import annotations

import os
import smtplib
from email.message import EmailMessage

import jumpqueue
from fastapi import FastAPI, HTTPException
from jumpqueue.contrib.starlette import JumpQueueMiddleware
from pydantic import BaseModel

SMTP_HOST = os.environ.get("SMTP_HOST", "127.0.0.1")
SMTP_PORT = int(os.environ.get("SMTP_PORT", "1025"))

app = FastAPI()
app.add_middleware(JumpQueueMiddleware)
members: set[str] = set()  # stands for the users table


class SignUp(BaseModel):
    """The sign-up form."""

    email: str


@jumpqueue.task(retries=3, timeout=30)
def send_welcome_email(address: str) -> None:
    """Send the welcome mail: the slow SMTP exchange the client does not wait for."""
    message = EmailMessage()
    message["From"] = "welcome@example.com"
    message["To"] = address
    message["Subject"] = "Welcome!"
    message.set_content(f"Hello {address}, and welcome.")
    with smtplib.SMTP(SMTP_HOST, SMTP_PORT, timeout=10) as smtp:
        smtp.send_message(message)


@app.post("/signup", status_code=201)
def signup(form: SignUp) -> dict[str, str]:
    """201, and the mail once the response is sent; 409, and no mail, if the address is taken."""
    jumpqueue.defer(send_welcome_email, form.email)  # held until the response is sent
    if form.email in members:
        raise HTTPException(409, "already registered")  # a failed request: the mail is skipped
    members.add(form.email)
    return {"status": "welcome!"}
