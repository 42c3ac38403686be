"""Offline training: labels, datasets, honest splits, two-phase fine-tuning, evaluation, registry."""
