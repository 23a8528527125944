"""The reference box: a minimal CRM/ERP (orders and their lines, comments, warehouse stock, goods
in transit, price lists, branch reports) on its own PostgreSQL database, built on the box SDK.
It makes the network's flows visible and testable: ``boxbus box run --box ID``."""

from connectors.refbox.actions import BusinessError, LineSpec, RefBox
from connectors.refbox.handlers import handlers
from connectors.refbox.schema import migrate_refbox
from connectors.refbox.service import BoxService
from connectors.refbox.view import box_view, render_view

__all__ = ["BoxService", "BusinessError", "LineSpec", "RefBox", "box_view", "handlers",
           "migrate_refbox", "render_view"]
