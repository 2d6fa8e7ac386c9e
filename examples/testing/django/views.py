"""A view that defers a welcome e-mail: what the Django recipe tests."""

from __future__ import annotations

import jumpqueue
from django.core.mail import send_mail
from django.http import HttpRequest, HttpResponse

registered = {"taken@example.com"}  # stands for the users table


@jumpqueue.task(retries=3)
def send_welcome_email(address: str) -> None:
    """Send the welcome e-mail."""
    send_mail("Welcome!", "Thanks for signing up.", None, [address])


def signup(request: HttpRequest) -> HttpResponse:
    """201, and the e-mail once the response is sent; 409 if the address is taken."""
    address = request.POST["email"]
    jumpqueue.defer(send_welcome_email, address)  # held until the response is sent
    if address in registered:  # the request fails after defer(): the e-mail is skipped
        return HttpResponse("already registered", status=409)
    return HttpResponse("welcome!", status=201)
