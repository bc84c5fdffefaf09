"""Runnable examples built on fastrnn's modules (see examples/README.md)."""
