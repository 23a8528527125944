"""Integration inside one company: sales, service delivery and billing as three small boxes on
the SDK, joined by events and by request/reply, so that data is entered once."""

from connectors.company.service import SystemService
from connectors.company.systems import KINDS, Billing, Delivery, Peers, Sales, System

__all__ = ["KINDS", "Billing", "Delivery", "Peers", "Sales", "System", "SystemService"]
