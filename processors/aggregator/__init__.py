"""Central analytics: the aggregator (work in progress, issue 14)."""

from processors.aggregator.service import Aggregator, AggregatorStats

__all__ = ["Aggregator", "AggregatorStats"]
