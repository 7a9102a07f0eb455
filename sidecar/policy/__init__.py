"""The policy: a pure description of providers and routes, and the decisions it implies.

Nothing in this package imports a web stack, an HTTP client or prometheus-client (a test enforces it).
"""
