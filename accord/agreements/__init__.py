"""Versioned agreements partners accept, the rules that say who must, and the record of who did."""
