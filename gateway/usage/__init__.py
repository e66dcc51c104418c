"""The usage store: one row per finished request (who, which model, tokens, cost, time), kept in SQLite or
PostgreSQL off the request path, and the queries the usage API and page read.

    sink (record.py) ─> bounded queue, batching writer (writer.py) ─> store (sqlite.py | postgres.py)
                                                                       ^ migrations (schema.py), retention.py
    api/usage.py ─> query.py ─> store
"""
