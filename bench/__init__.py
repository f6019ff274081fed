"""Benchmarks of gridwhistle against a real Kafka broker and a real PostgreSQL (`make bench`)."""
