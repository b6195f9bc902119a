"""Announcements: news from the program team to partners, targeted by tier, partner type and audience."""
