"""The contact form: the visitor's message is mailed to the team after the response."""

from __future__ import annotations

import jumpqueue
from django.core.mail import send_mail
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

TEAM = "team@example.com"


@jumpqueue.task(retries=3, timeout=30)
def mail_the_team(sender: str, text: str) -> None:
    """Mail a visitor's message to the team, through Django's mail backend."""
    send_mail(f"Message from {sender}", text, None, [TEAM], fail_silently=False)


def contact(request: HttpRequest) -> HttpResponse:
    """Take a message: 202 now, the mail once the response is sent."""
    sender, text = request.POST.get("email", ""), request.POST.get("message", "")
    if request.method != "POST" or "@" not in sender or not text:
        return HttpResponseBadRequest("an email and a message, please")
    jumpqueue.defer(mail_the_team, sender, text)
    return HttpResponse("thank you, we will answer soon", status=202)
