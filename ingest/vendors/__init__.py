"""The vendors' capture APIs: bodies their SDKs send, as our events.

Each vendor module turns one decoded body into our event records (``translate``), so the
validation, limits and exactly-once path of ``POST /events`` apply unchanged; ``routes.py``
answers in the form each SDK expects.
"""
