"""The HTTP/1.1 client to upstreams and the pure URL/header rules; it knows no token, route or ASGI."""
