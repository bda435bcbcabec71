"""rtk-export: archive Cloudflare RealtimeKit chat exports, paced, resumable and verified."""

__version__ = "0.1.0"
