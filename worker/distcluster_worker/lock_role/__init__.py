"""The lock_manager role: Raft driven over HTTP and Redis, serving the lock API."""
