import pytest

from gateway.config.settings import Settings, parse_duration, parse_model_list
from gateway.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0), ("1.5", 1.5), ("250us", 0.00025)],
)
def test_durations_read_like_go(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "10x", "1m 30s", "-5s"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_defaults_follow_the_spec() -> None:
    s = Settings.from_env({})
    assert (s.environment, s.host, s.port) == ("production", "0.0.0.0", 8080)
    assert (s.read_timeout, s.write_timeout, s.idle_timeout) == (30.0, 30.0, 120.0)
    assert (s.client_timeout, s.response_header_timeout, s.idle_conn_timeout) == (30.0, 10.0, 30.0)
    assert (s.max_idle_conns, s.max_idle_conns_per_host) == (20, 20)
    assert s.tls_min_version == "TLS12" and s.disable_compression is True and s.enable_vision is False
    assert s.max_request_body_size == 10 * 1024 * 1024
    assert (s.debug_content_truncate_words, s.debug_max_messages) == (10, 100)
    assert s.providers_file == "providers.yaml"


def test_values_are_read_from_the_mapping() -> None:
    s = Settings.from_env(
        {
            "ENVIRONMENT": "development",
            "SERVER_PORT": "9000",
            "CLIENT_TIMEOUT": "2m",
            "ENABLE_VISION": "TRUE",
            "ALLOWED_MODELS": " OpenAI/GPT-4o , ,claude-*",
            "CLIENT_TLS_MIN_VERSION": "TLS13",
        }
    )
    assert s.environment == "development" and s.port == 9000 and s.client_timeout == 120.0
    assert s.enable_vision is True and s.tls_min_version == "TLS13"
    assert s.allowed_models == ("openai/gpt-4o", "claude-*")


def test_every_bad_value_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {
                "SERVER_PORT": "http",
                "CLIENT_TIMEOUT": "forever",
                "ENABLE_VISION": "maybe",
                "SERVER_TLS_CERT_PATH": "/cert.pem",
            }
        )
    text = caught.value.render()
    for name in ("SERVER_PORT", "CLIENT_TIMEOUT", "ENABLE_VISION", "SERVER_TLS_KEY_PATH"):
        assert name in text
    assert len(caught.value.problems) == 4


def test_model_lists_are_trimmed_and_lowered() -> None:
    assert parse_model_list("A, b ,,C") == ("a", "b", "c")


def test_the_metrics_port_cannot_be_the_api_port() -> None:
    with pytest.raises(ConfigError, match="TELEMETRY_METRICS_PORT must differ from SERVER_PORT"):
        Settings.from_env({"TELEMETRY_ENABLE": "true", "SERVER_PORT": "9000", "TELEMETRY_METRICS_PORT": "9000"})
    assert Settings.from_env({"SERVER_PORT": "9000", "TELEMETRY_METRICS_PORT": "9000"}).port == 9000
