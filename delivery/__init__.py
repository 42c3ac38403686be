"""Results back to PACS: the outbox sender (C-STORE with retries) and its command."""
