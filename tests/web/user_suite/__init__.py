"""An application's own test suite, as a user writes it; tests/web/test_user_suite.py runs it."""
