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
