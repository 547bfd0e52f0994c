"""Cluster-wide coordination: the local leaders of several regions decide which region forges.

``policy`` is the pure decision core; ``model`` parses CardanoForgeCluster objects; ``liveness``
judges other regions on this pod's monotonic clock; ``health_check`` probes this region's health
endpoint; ``resource`` reads and writes the resources in the coordination API; ``settings`` parses
the environment; ``metrics`` exports the cluster-wide metrics.
"""
