"""Who the caller is: the bearer token, its verification (keys, discovery, JWKS) and introspection."""
