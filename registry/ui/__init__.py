"""The web UI: static pages plus a small JSON API under ``ui.path``, with the API's access rules.

Only imported when ``ui.enabled`` is true, so ``pyreg serve`` without the UI loads none of it.
"""

from pyreg.registry.ui.routes import ui_routes

__all__ = ["ui_routes"]
