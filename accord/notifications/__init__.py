"""Email notifications: an outbox of rendered messages, fed by the event outbox and by direct calls."""
