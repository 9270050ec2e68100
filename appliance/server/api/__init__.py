"""The REST API: routes, request bodies, error replies, CORS and the HTTP guard
(docs/architecture.md)."""
