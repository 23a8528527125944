"""The network's topology: the file (regions, boxes, relationships, subscriptions), its plan
and apply on a cluster, and the compacted control topics that carry it to the router."""

from bus.topology.control import desired_records, read_control
from bus.topology.model import (
    Box,
    BoxKind,
    Branch,
    Internal,
    Region,
    Scope,
    Subscription,
    Topology,
    TopologyError,
    Trade,
    load_topology,
    parse_topology,
)
from bus.topology.plan import Applied, Change, Plan, apply_plan, make_plan, wanted_topics

__all__ = [
    "Applied",
    "Box",
    "BoxKind",
    "Branch",
    "Change",
    "Internal",
    "Plan",
    "Region",
    "Scope",
    "Subscription",
    "Topology",
    "TopologyError",
    "Trade",
    "apply_plan",
    "desired_records",
    "load_topology",
    "make_plan",
    "parse_topology",
    "read_control",
    "wanted_topics",
]
