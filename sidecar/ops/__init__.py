"""Running it: the admin listener, servers and workers, hot reload and the last good policy."""
