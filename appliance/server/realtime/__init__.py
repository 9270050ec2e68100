"""The realtime layer: WebSocket connections, the event hub and presence, the signaling relay,
the replica fan-out over PostgreSQL NOTIFY, token expiry on open sockets
(docs/architecture.md)."""
