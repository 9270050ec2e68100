"""What goes on the wire: response and event bodies as Stream's SDK parses them, strict JSON,
the time encoding a client reads, redaction of secrets in logs (docs/architecture.md)."""
