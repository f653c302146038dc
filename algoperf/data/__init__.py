"""Framework-free data helpers: rank sharding, in-memory array streams, eval padding."""
