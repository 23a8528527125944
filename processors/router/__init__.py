"""The router: delivers each event of the region topics to the boxes entitled to it, decided
from the envelope headers and the network's control topics (``boxbus router run``)."""

from processors.router.service import Router, RouterStats
from processors.router.table import Decision, Recipient, RoutingTable

__all__ = ["Decision", "Recipient", "Router", "RouterStats", "RoutingTable"]
