import pytest
from pydantic import ValidationError

from assistant.config import Settings


def test_defaults_bind_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("ASSISTANT_SERVICE__HOST", "ASSISTANT_SERVICE__PORT"):
        monkeypatch.delenv(key, raising=False)
    settings = Settings()
    assert settings.service.host == "127.0.0.1"
    assert settings.service.port == 8000
    assert settings.data_dir.is_absolute()


def test_nested_env_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("ASSISTANT_LIMITS__MAX_UPLOAD_BYTES", "1234")
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.limits.max_upload_bytes == 1234
    assert str(settings.data_dir) == str(tmp_path)


@pytest.mark.parametrize(("key", "value"), [
    ("ASSISTANT_SERVICE__PORT", "70000"),
    ("ASSISTANT_LIMITS__MAX_PIXELS", "0"),
    ("ASSISTANT_ENVIRONMENT", "staging"),
])
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError):
        Settings()


def test_log_level_names_as_logging_takes_them() -> None:
    from assistant.config import Settings

    assert Settings(log_level="warn").log_level == "WARNING"
    assert Settings(log_level=" debug ").log_level == "DEBUG"

