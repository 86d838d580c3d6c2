"""Tests of pure code: no services, no processes."""
