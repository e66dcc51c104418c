"""Who is calling and may they: client keys, OIDC tokens, per-client policies and rate limits."""
