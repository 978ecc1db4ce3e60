"""Pages of the pipelines layer: `items` (what runs), `configuration` (pipelines, steps,
prompts), `catalogue` (providers and models)."""
