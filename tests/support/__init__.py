"""Helpers shared by the test suite: real daemons, real databases, SMTP clients."""
