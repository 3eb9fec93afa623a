"""Benchmarking on this machine or a device over SSH: one method and report schema for every engine."""
