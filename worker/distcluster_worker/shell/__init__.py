"""The generic node shell: configuration, logging, HTTP server, RPC client, Redis pool, metrics."""
