"""Simulator fixtures (filled in by the LLM engine work)."""
