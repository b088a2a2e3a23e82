"""Per-app rate limits: the interface in `base`, implementations in `memory_impl` (one process) and
`redis_impl` (cluster-wide)."""
