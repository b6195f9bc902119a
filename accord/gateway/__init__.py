"""The data plane: a raw-ASGI reverse proxy that enforces the program on live traffic.

Hot-path modules (`proxy`, `snapshot`, `limits`, `recorder`, `metrics`) import no
web framework, no ORM session and no Pydantic. `builder` runs off the hot path:
it reads the database with SQLAlchemy Core and produces an immutable `Snapshot`.
"""
from accord.gateway import native as _native

_native.activate(__path__)  # the compiled hot path when built and current (see accord.gateway.native)
