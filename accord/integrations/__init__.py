"""The integration audit: every partner's access, credentials, agreements, traffic and stage, with flags."""
