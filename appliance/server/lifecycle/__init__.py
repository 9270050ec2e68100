"""The call lifecycle: ringing, sessions, participants, deadlines, permissions, and the outbox
through which their events leave a transaction (docs/architecture.md)."""
