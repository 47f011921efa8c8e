"""Bulk import of history (``import_events``): files -> validation -> PostgreSQL or the lake."""
