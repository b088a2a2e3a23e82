"""Webhooks: events and interfaces in `base`, the queue and its workers in `queue`, job stores in
`memory_impl` and `redis_impl`, HTTP delivery in `sender`."""

from shared.webhooks.base import NullWebhookQueue, WebhookEvent, WebhookQueue, queue_webhooks, wants

__all__ = ["NullWebhookQueue", "WebhookEvent", "WebhookQueue", "queue_webhooks", "wants"]
