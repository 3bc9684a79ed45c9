"""Benchmarks: the seed's Celery baseline, the raw Redis Streams ceiling, and streamcalc."""
