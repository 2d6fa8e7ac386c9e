"""The example project's tests: Django's TestCase with deferred calls run in place."""

from __future__ import annotations

import contextlib
import unittest

from django.core import mail
from django.test import TestCase
from jumpqueue import Status
from jumpqueue.testing import immediate

from views import send_welcome_email


class DeferredCallsRunInPlace(unittest.TestCase):
    """Mix into a test case: each test runs deferred calls in place, in `self.deferred_calls`."""

    def setUp(self) -> None:
        super().setUp()
        stack = contextlib.ExitStack()  # on Python 3.11+: self.enterContext(immediate())
        self.deferred_calls = stack.enter_context(immediate())
        self.addCleanup(stack.close)


class SignupTests(DeferredCallsRunInPlace, TestCase):
    """`POST /signup`, with deferred calls run in place."""

    def test_signup_sends_the_welcome_email(self) -> None:
        # Django's test client closes the response, as a server does after its
        # last byte: that is when the calls held for the request run.
        response = self.client.post("/signup", {"email": "a@example.com"})
        self.assertEqual(response.status_code, 201)
        self.assertEqual(mail.outbox[0].to, ["a@example.com"])

    def test_a_failed_signup_sends_nothing(self) -> None:
        response = self.client.post("/signup", {"email": "taken@example.com"})
        self.assertEqual(response.status_code, 409)
        self.assertIs(self.deferred_calls[0].status, Status.SKIPPED)
        self.assertEqual(mail.outbox, [])

    def test_signup_emails_the_address_it_was_given(self) -> None:
        self.client.post("/signup", {"email": "a@example.com"})
        [call] = self.deferred_calls
        self.assertIs(call.fn, send_welcome_email.fn)
        self.assertEqual(call.args, ("a@example.com",))
        self.assertIs(call.status, Status.SUCCEEDED)
