"""Central analytics: the aggregator keeps the aggregates of every region topic in an
analytics PostgreSQL database, exactly once."""

from processors.aggregator.service import Aggregator, AggregatorStats

__all__ = ["Aggregator", "AggregatorStats"]
