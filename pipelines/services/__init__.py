"""Writes of the pipelines layer, one module per subdomain: `configuration` (pipelines, steps,
prompts, providers, models, routes) and `ingest` (items in)."""
