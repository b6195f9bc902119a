"""Import every domain's tables so metadata (Alembic, tests) sees them all."""
from accord.agreements import models as agreements  # noqa: F401
from accord.announcements import models as announcements  # noqa: F401
from accord.apps import models as apps  # noqa: F401
from accord.audit import models as audit  # noqa: F401
from accord.auth import models as auth  # noqa: F401
from accord.catalog import models as catalog  # noqa: F401
from accord.customfields import models as customfields  # noqa: F401
from accord.events import models as events  # noqa: F401
from accord.notifications import models as notifications  # noqa: F401
from accord.onboarding import models as onboarding  # noqa: F401
from accord.partners import models as partners  # noqa: F401
from accord.plans import models as plans  # noqa: F401
from accord.products import models as products  # noqa: F401
from accord.subscriptions import models as subscriptions  # noqa: F401
from accord.teams import models as teams  # noqa: F401
from accord.usage import models as usage  # noqa: F401
from accord.users import models as users  # noqa: F401
from accord.webhooks import models as webhooks  # noqa: F401
from accord.core import version as program_version  # noqa: F401
from accord.core.db import Base

metadata = Base.metadata
