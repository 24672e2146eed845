"""wschaos reference WebSocket balancer: relay with in-place failover.

Pure core: ``config``, ``policy``, ``state``. I/O shell: ``pool``, ``session``,
``admin``, ``server``. See docs/contract.md for the build contract.
"""
