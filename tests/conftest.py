"""Shared fixtures: the stand-in provider server and entity factories live in their own modules."""
