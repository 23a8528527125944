"""Peer forwarders: the router's forwarding done with other stream libraries, for the benchmark."""
