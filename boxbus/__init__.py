"""The ``boxbus`` command: the command-line layer above the library (:mod:`bus`), the box SDK
(:mod:`connectors`) and the stream processors (:mod:`processors`)."""
