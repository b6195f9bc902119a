"""The partner funnel: where partners are on the onboarding path, how fast they move, who is stuck."""
