"""/healthz and /readyz, as a load balancer calls them: signed out."""

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder

from tests.oidc_provider import free_port

pytestmark = pytest.mark.django_db


def test_it_says_the_process_is_up(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_it_is_ready_with_the_database_migrated_and_the_cache_answering(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_it_names_the_failing_components_and_nothing_more(client, settings, caplog):
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    settings.REDIS_URL = dead_redis

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"status": "failing", "failing": ["redis", "broker"]}
    assert dead_redis not in response.content.decode()
    # The reason is for the operator's log.
    assert "readiness check redis failed" in caplog.text


def test_it_refuses_other_methods(client):
    assert client.post("/readyz").status_code == 405


def test_it_is_not_ready_while_a_migration_is_unapplied(client):
    app, newest = MigrationLoader(connection).graph.leaf_nodes("chat")[0]
    MigrationRecorder(connection).record_unapplied(app, newest)

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["failing"] == ["migrations"]
