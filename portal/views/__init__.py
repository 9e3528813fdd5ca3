"""Customer-facing views, one module per area. Each resolves objects through portal.access."""
