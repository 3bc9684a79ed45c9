"""The seed's design (Django + Celery + python-redis-lock), rewritten as a benchmark baseline.

``tasks`` holds the Celery app and the recursive ``compute_nodes`` task; ``run`` starts a
Celery worker subprocess against a given Redis and measures it (see :func:`run.run_baseline`).
"""
