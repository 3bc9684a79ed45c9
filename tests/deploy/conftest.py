"""Fixtures of the deployment kit tests: the Dockerfile's stages, parsed once."""

from __future__ import annotations

import pytest

from .kit import DOCKERFILE, Stage, parse_dockerfile


@pytest.fixture(scope="session")
def stages() -> list[Stage]:
    """Every stage of the repository's Dockerfile, in order."""
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="session")
def final(stages: list[Stage]) -> Stage:
    """The Dockerfile's final stage: the image that runs."""
    return stages[-1]
