"""Tests against the real Postgres, Redis and a moto S3 server."""
