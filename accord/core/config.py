"""Settings from environment variables (prefix ACCORD_), with safe demo defaults."""
from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The well-known secret the demo runs with. `accord serve` refuses it in production.
DEMO_SECRET_KEY = "accord-demo-secret-key-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACCORD_", extra="ignore")

    mode: Literal["development", "production"] = "development"
    database_url: str = "sqlite+aiosqlite:///./accord.db"
    secret_key: str = Field(default=DEMO_SECRET_KEY, min_length=16)
    host: str = "127.0.0.1"
    port: int = 8000
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    invitation_days: int = 7
    user_session_days: int = 30
    log_sql: bool = False
    # The gateway (data plane).
    gateway_redis_url: str | None = None  # shared limit counters for several gateway processes
    gateway_limits_on_redis_down: Literal["open", "closed"] = "open"  # per-process limits, or 503
    gateway_upstream_timeout: float = 30.0
    gateway_poll_interval: float = 0.2  # how often the program version is checked
    gateway_flush_interval: float = 1.0  # how often usage is written

    def refuse_unsafe(self) -> None:
        """Raise if this configuration must not run in production."""
        if self.mode == "production" and self.secret_key == DEMO_SECRET_KEY:
            raise RuntimeError(
                "ACCORD_SECRET_KEY is the demo secret; set a long random ACCORD_SECRET_KEY "
                "before running with ACCORD_MODE=production"
            )


@lru_cache
def get_settings() -> Settings:
    return Settings()
