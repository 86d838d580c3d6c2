"""The monitoring profile of compose.yaml and its files: Prometheus scrapes where the farm serves, Grafana and Flower
take their passwords from the operator's .env, nothing of it is published beyond 127.0.0.1, and the dashboard
queries only metrics the farm defines."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ("prometheus", "grafana", "flower")


def compose_config(tmp_path: Path) -> tuple[dict, dict[str, str]]:
    names = re.findall(r"^(\w+)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    values = {name: secrets.token_hex(16) for name in names} | {"FARM_S3_PUBLIC_URL": "https://files.example.org"}
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    docker_compose = shutil.which("docker-compose")
    assert docker_compose, "docker-compose is not installed (tools/system-packages installs it)"
    result = subprocess.run(
        [
            docker_compose,
            "--env-file",
            str(env_file),
            "-f",
            str(ROOT / "compose.yaml"),
            "--profile",
            "monitoring",
            "config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout), values


def test_monitoring_services_are_a_profile_with_the_operators_passwords(tmp_path):
    config, values = compose_config(tmp_path)
    services = config["services"]
    for name in MONITORING:
        assert services[name]["profiles"] == ["monitoring"], name
        for port in services[name].get("ports", []):  # docker-compose 1.x keeps the short form, 2.x expands it
            host_ip = port.split(":")[0] if isinstance(port, str) else port.get("host_ip")
            assert host_ip == "127.0.0.1", (name, port)  # an SSH tunnel or a TLS proxy reaches them
    flower = services["flower"]["environment"]
    assert flower["FLOWER_BASIC_AUTH"] == f"farm:{values['FLOWER_PASSWORD']}"
    assert flower["CELERY_BROKER_URL"] == services["worker"]["environment"]["FARM_BROKER_URL"]
    grafana = services["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == values["GRAFANA_ADMIN_PASSWORD"]
    assert grafana["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert services["worker"]["environment"]["FARM_WEBHOOK_SECRET"] == values["FARM_WEBHOOK_SECRET"]
    for name in ("prometheus", "grafana"):  # what they mount ships with the project
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith("/"):  # a bind mount, not a named volume
                assert Path(source).exists(), source


def test_prometheus_scrapes_where_the_farm_serves(tmp_path):
    config, _ = compose_config(tmp_path)
    port = int(config["services"]["worker"]["environment"]["FARM_METRICS_PORT"])
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())["scrape_configs"]
    jobs = {job["job_name"]: job for job in scrape}
    assert jobs["farm-web"]["metrics_path"] == "/metrics"
    assert jobs["farm-web"]["static_configs"][0]["targets"] == ["web:5000"]
    for name, service in (("farm-worker", "worker"), ("farm-worker-gpu", "worker-gpu")):
        (sd,) = jobs[name]["dns_sd_configs"]
        assert sd["names"] == [service] and sd["port"] == port and service in config["services"]


def test_the_dashboard_reads_the_provisioned_prometheus():
    dashboard = json.loads((ROOT / "deploy/grafana/farm.json").read_text())
    source = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yaml").read_text())
    (prometheus,) = source["datasources"]
    assert dashboard["uid"] == "farm" and dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == prometheus["uid"], panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
