"""`rtk-export serve`: RealtimeKit's webhooks as one more source of units (events, signature,
inbox, server)."""
