"""The ground every package stands on: logging, errors, metrics and health helpers, and the domain's
vocabulary. It imports nothing of ours (see docs/architecture.md)."""
