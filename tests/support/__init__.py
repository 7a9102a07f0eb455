"""Test helpers shared by the test suites: key pairs, JWKS documents, minted and forged tokens."""
