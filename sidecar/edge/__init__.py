"""The request path: listener protocol, head checks, decision, the gate, forward-auth, CORS, forwarding."""
