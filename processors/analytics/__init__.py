"""Central analytics for people: the named queries of the analytics database, the HTTP API
and the dashboard over them."""
