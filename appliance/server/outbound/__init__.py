"""What leaves the server for other services: Web Push to subscribed browsers (VAPID keys, push
devices, the sender) and signed webhooks (docs/architecture.md)."""
