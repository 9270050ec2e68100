"""The store: tables, migrations, the engine (SQLite or PostgreSQL), the query compiler and the
records read and written through it (users, members, call types). Imports nothing of the
server outside this folder (docs/architecture.md)."""
