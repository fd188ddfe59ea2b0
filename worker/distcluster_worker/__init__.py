"""DistCluster worker node: pure cores (Raft, lock table) and the asyncio shell around them."""

__version__ = "0.1.0"
