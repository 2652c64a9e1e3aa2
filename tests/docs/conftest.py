from tests.integration.conftest import gateway, logs_dir, redis_server, workers  # noqa: F401 - shared fixtures
