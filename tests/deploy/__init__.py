"""The deployment kit agrees with the code: Dockerfile, compose, Prometheus, Grafana, Kubernetes.

No Docker engine runs in CI, so the image is checked by replaying its steps
(``test_image``): the slow test builds the wheel as the builder stage does,
installs it into a fresh virtualenv as the final stage does, and runs the
image's entrypoint there. Shared helpers are in ``kit``, fixtures in ``conftest``.
"""
