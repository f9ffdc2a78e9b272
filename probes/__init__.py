"""hierlens.probes: sparse probing."""
