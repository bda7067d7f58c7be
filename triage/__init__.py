"""Pure domain logic: threading, classification, SLA arithmetic. No I/O.

The daemon fetches candidates from storage and hands them in; triage decides.
"""
