"""Webhooks: endpoints registered by the provider and by partners, signed deliveries of the
event outbox (Standard Webhooks), retries for three days, and the dispatcher that sends them."""
