"""Per-caller rate limits and their counters (in this process, or shared in Redis)."""
