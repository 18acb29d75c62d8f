"""The ARM server's fixtures come from tests/conftest.py (one server per session)."""
