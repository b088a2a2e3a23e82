"""The bus: the interface and envelope in `base`, implementations in `memory_impl` (one process) and
`redis_impl` (Redis pub/sub, sharded on a Redis Cluster)."""

from shared.bus.base import Bus, BusUnavailable, Envelope, Receiver

__all__ = ["Bus", "BusUnavailable", "Envelope", "Receiver"]
