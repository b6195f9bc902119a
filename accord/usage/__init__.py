"""Usage: what the gateway counted (written by accord.gateway.recorder) and the admin API that reports it."""
