"""The administrator's web console (issue 12): Jinja2 pages over the API's services.

``create_console(core)`` builds it; ``mount_console(app, core)`` mounts it under
``/console`` of the admin API app (``limen serve`` does). See :mod:`limen.web.app`.
"""

from limen.web.app import Console, create_console, mount_console

__all__ = ["Console", "create_console", "mount_console"]
