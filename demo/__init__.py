"""The local multi-region demonstration (``make demo``)."""
