"""The queue between the HTTP edge and PostgreSQL.

Message contract, topology, publisher, and the consuming workers.
"""
