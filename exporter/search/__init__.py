"""`rtk-export search`: full-text search over the archive's chat messages and transcripts."""
