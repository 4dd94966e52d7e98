"""deploy/: the compose file and the Prometheus config, checked against the code they run (no
Docker engine runs here, so nothing is started)."""

from __future__ import annotations

import re

import yaml

from serving.settings import Settings
from tests.conftest import REPO

DEPLOY = REPO / "deploy"


def test_compose_runs_replicas_of_this_image_on_postgresql_with_real_settings():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "curator", "prometheus"}
    curator = services["curator"]
    build = DEPLOY / curator["build"]["context"] / curator["build"]["dockerfile"]
    assert build.resolve() == (REPO / "Dockerfile").resolve()
    assert curator["deploy"]["replicas"] >= 2
    environment = curator["environment"]
    fields = set(Settings.model_fields)
    for name in environment:  # every variable is a setting the service reads
        assert name.startswith("CURATOR_") and name[len("CURATOR_") :].lower() in fields, name
    url = environment["CURATOR_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://") and "@postgres:5432/" in url
    requirements = (REPO / "requirements.txt").read_text()
    assert re.search(r"^psycopg==", requirements, re.M)  # the driver the URL names is pinned
    assert curator["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["postgres"]["image"].startswith("postgres:15")
    exports = [v for v in curator["volumes"] if v.endswith(":/exports:ro")]
    assert exports, "the replicas read the exports root"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "CURATOR_MODEL_DIR=/exports" in dockerfile


def test_prometheus_scrapes_every_replica_on_the_service_port():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounted = compose["services"]["prometheus"]["volumes"][0].split(":")[0]
    config = yaml.safe_load((DEPLOY / mounted).read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["curator"] and discovery["type"] == "A"
    port = re.search(r"CURATOR_PORT=(\d+)", (REPO / "Dockerfile").read_text()).group(1)
    assert discovery["port"] == int(port)
