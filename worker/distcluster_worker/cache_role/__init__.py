"""The `cache` role: node-local MESI caches kept coherent by per-key home directories.

See `node.py` for the protocol and its endpoints; run one node with
``python -m distcluster_worker.cache_role`` (configured by the environment).
"""
