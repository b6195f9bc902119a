"""Routes for plans."""
from __future__ import annotations

from fastapi import APIRouter

from accord.core.errors import problem_responses

admin_router = APIRouter(responses=problem_responses(401, 403))
