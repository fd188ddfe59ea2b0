"""DistCluster Kubernetes operator (kopf). Built by the operator issue."""
