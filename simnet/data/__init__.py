"""Data shipped with simnet: the Envoy memory calibration (``envoy_memory.json``)."""
