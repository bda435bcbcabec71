"""RealtimeKit webhooks: payloads, signatures, registration and the receiver."""
