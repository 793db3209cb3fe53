import pytest
from django.core.exceptions import ImproperlyConfigured

from assistant.env import env_bool, env_float, env_int, env_list, env_secret


def test_it_reads_typed_values(monkeypatch):
    monkeypatch.setenv("A_BOOL", "yes")
    monkeypatch.setenv("AN_INT", "42")
    monkeypatch.setenv("A_FLOAT", "0.5")
    monkeypatch.setenv("A_LIST", "a, b,,c")

    assert env_bool("A_BOOL") is True
    assert env_int("AN_INT", 1) == 42
    assert env_float("A_FLOAT", 1.0) == 0.5
    assert env_list("A_LIST") == ["a", "b", "c"]
    assert env_int("UNSET_INT", 7) == 7


@pytest.mark.parametrize(
    "reader, value",
    [
        (lambda: env_bool("VALUE"), "maybe"),
        (lambda: env_int("VALUE", 1), "eight"),
        (lambda: env_int("VALUE", 1, minimum=1), "0"),
        (lambda: env_float("VALUE", 1.0), "fast"),
    ],
)
def test_it_fails_loudly_on_a_bad_value(monkeypatch, reader, value):
    monkeypatch.setenv("VALUE", value)

    with pytest.raises(ImproperlyConfigured, match="VALUE"):
        reader()


def test_it_reads_a_secret_from_a_file(monkeypatch, tmp_path):
    secret = tmp_path / "key"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("API_KEY_FILE", str(secret))

    assert env_secret("API_KEY") == "s3cret"


def test_it_fails_loudly_on_a_missing_secret_file(monkeypatch, tmp_path):
    monkeypatch.setenv("API_KEY_FILE", str(tmp_path / "missing"))

    with pytest.raises(ImproperlyConfigured, match="API_KEY_FILE"):
        env_secret("API_KEY")
