"""Comparing representations and their geometry."""
