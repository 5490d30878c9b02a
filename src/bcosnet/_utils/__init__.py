"""Internal helpers shared by bcosnet's modules (not a public API)."""
