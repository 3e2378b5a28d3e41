"""Suites that attack the gateway's edge with other projects' cases and with generated input."""
