"""The embedded demo: a token issuer shaped like Microsoft Entra ID, an echo upstream and their policy."""
