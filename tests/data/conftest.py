import pytest

from assistant.config import Settings


@pytest.fixture
def settings() -> Settings:
    return Settings()
