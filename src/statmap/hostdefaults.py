"""The standalone server's defaults (``statmap serve``), in a module of their own.

``host_stdlib`` uses them and re-exports them; the CLI's parser reads them
for its help texts without importing the server (``statmap export`` and
``statmap show`` start in a fraction of the time).
"""

from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464  # the port Prometheus' registry of default ports gives statmap-like exporters
# The standalone server's limits (docs/serve.md, "Limits"): slow or idle clients cannot hold it.
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds to send a whole request head
DEFAULT_IDLE_TIMEOUT = 60.0  # seconds a keep-alive connection may wait for its next request
DEFAULT_WRITE_TIMEOUT = 30.0  # seconds to take a whole response
DEFAULT_MAX_CONNECTIONS = 256  # open connections (at most half the descriptor limit)
DEFAULT_THREADS = 8  # workers running requests (collections are shared, so few are needed)
