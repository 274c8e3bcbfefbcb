"""The test suite; shared fixtures are in conftest.py, servers and RPC helpers beside it."""
