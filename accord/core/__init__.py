"""Shared plumbing for every domain package: settings, database, errors, security, pagination."""
