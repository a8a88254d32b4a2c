"""deploy/: generated files in sync with their table, bentofiles accepted by BentoML, Kubernetes
manifests valid against the Kubernetes schemas, Prometheus config and alert rules checked (and
unit-tested) by promtool, the Grafana dashboard querying metrics the services export."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", DEPLOY / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"deploy_{name}"] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def _render():
    return _load("render")


def test_generated_files_match_their_table():
    res = subprocess.run([sys.executable, str(DEPLOY / "render.py"), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_bentofiles_are_valid_and_pick_one_onnx_runtime():
    from bentoml._internal.bento.build_config import BentoBuildConfig

    render = _render()
    files = sorted((DEPLOY / "bentofiles").glob("*.yaml"))
    assert len(files) == 9  # CPU for all five, GPU for the four model services
    for path in files:
        cfg = BentoBuildConfig.from_yaml(path.open())
        module, _, cls = cfg.service.partition(":")
        assert (REPO / (module.replace(".", "/") + ".py")).exists() and cls
        packages = cfg.python.packages
        gpu = path.stem.endswith("-gpu")
        assert any(p.startswith("onnxruntime-gpu") for p in packages) == gpu
        assert any(re.match(r"onnxruntime[>=]", p) for p in packages) == (not gpu)
        svc = next(s for s in render.SERVICES if path.stem.startswith(s.name + "-"))
        assert cfg.labels["grpc-port"] == str(svc.grpc)
        for export in svc.exports:
            assert f"exports/{export}/**" in cfg.include and (REPO / "exports" / export / "1" / "model.onnx").exists()


def test_bentofiles_install_what_the_serve_extra_installs():
    """A package added to the `serve` extra (the local install) reaches the images too; only the
    local process manager stays out of them."""
    import tomllib

    serve = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    common = set(_render().RUNTIME["common"])
    local_only = {"supervisor"}
    missing = [r for r in serve if re.split(r"[<>=;\[ ]", r)[0] not in local_only and r.split(";")[0].strip() not in common]
    assert not missing, f"in the serve extra but not in the bentofiles: {missing}"


def test_kubernetes_manifests_pass_the_schema_validator():
    import kubernetes_validate

    kinds: dict[str, set[str]] = {}
    for path in sorted((DEPLOY / "k8s").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(doc, "1.31", strict=True)
            kinds.setdefault(path.parent.name + "/" + path.stem, set()).add(doc["kind"])
            if doc["kind"] == "Deployment":
                c = doc["spec"]["template"]["spec"]["containers"][0]
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
                assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
                assert ("nvidia.com/gpu" in c["resources"]["limits"]) == (path.parent.name == "gpu")
    for name in ("pipeline", "filter", "attributes", "sampler", "critic"):
        assert kinds[f"base/{name}"] == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    assert {k for k in kinds if k.startswith("gpu/")} == {"gpu/filter", "gpu/attributes", "gpu/sampler", "gpu/critic"}


def test_a_broken_manifest_is_caught():
    import kubernetes_validate

    doc = next(yaml.safe_load_all((DEPLOY / "k8s" / "base" / "filter.yaml").read_text()))
    doc["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, "1.31", strict=True)


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool missing (Debian package `prometheus`; .ci/run installs it)")
def test_prometheus_config_and_alert_rules_pass_promtool():
    prom = DEPLOY / "prometheus"
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        res = subprocess.run(["promtool", *args], cwd=prom, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr


def test_dashboard_and_alerts_query_metrics_the_services_export():
    from services.core import metrics

    exported = {m._name for m in vars(metrics).values() if hasattr(m, "_name") and hasattr(m, "_type")}
    exported |= {n + "_total" for n in exported} | {n + s for n in exported for s in ("_bucket", "_sum", "_count")}
    dashboard = json.loads((DEPLOY / "grafana" / "facegen.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append((DEPLOY / "prometheus" / "alerts.yml").read_text())
    used = {m for e in exprs for m in re.findall(r"\bfacegen_[a-z_]+", e)}
    assert used and used <= exported, used - exported


def test_procfile_starts_every_service():
    render = _render()
    procs = _load("supervise").procfile()
    assert set(procs) == {s.name for s in render.SERVICES}
    for s in render.SERVICES:
        assert s.target in procs[s.name] and f"bentoml-{s.name}" in procs[s.name]
    ports = dict(line.split("=") for line in (DEPLOY / "ports.env").read_text().splitlines() if line and line[0] != "#")
    for s in render.SERVICES:
        assert ports[f"FACEGEN_{s.name.upper()}_HTTP_PORT"] == str(s.http)
        assert ports[f"FACEGEN_{s.name.upper()}_GRPC_PORT"] == str(s.grpc)


def test_sourcing_env_sh_leaves_the_callers_shell_as_it_was(tmp_path):
    """README: "from another shell, `source deploy/env.sh` first" — a `set -e` leaking out of it
    would close that shell at the first failed command, and a `cd` would move where files go."""
    script = f"""set +eu; cd {tmp_path}; source {DEPLOY / 'env.sh'} || exit 9
echo "opts=$-"; echo "pwd=$PWD"; echo "python=$(command -v python)"; echo "trim=${{MALLOC_TRIM_THRESHOLD_:-}}"
false; echo alive"""
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    got = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert "e" not in got["opts"] and "u" not in got["opts"] and got["pwd"] == str(tmp_path)
    assert got["python"] == str(REPO / ".venv" / "bin" / "python")
    assert got["trim"] == ""  # the training allocator policy is not handed to every process of the shell
    assert out.stdout.rstrip().endswith("alive")
    # a set-up that fails returns an error to the caller, whose shell goes on
    fake = tmp_path / "fake"
    (fake / "deploy").mkdir(parents=True)
    shutil.copy(DEPLOY / "env.sh", fake / "deploy" / "env.sh")
    script = f"set +e; PYTHON=false source {fake / 'deploy' / 'env.sh'}; echo rc=$?; echo alive"
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert "rc=1" in out.stdout and out.stdout.rstrip().endswith("alive") and "failed" in out.stderr, out


def test_a_scripts_own_arguments_are_not_taken_for_extras(tmp_path):
    """`bash tests/run.sh -k layouts` sources env.sh with $1 = "-k": that must not become the
    extras to install (it reinstalled facegen[-k], which pip refuses)."""
    stamp = REPO / ".venv" / ".facegen-installed"
    before = stamp.read_text()
    script = f"set -- -k layouts; source {DEPLOY / 'env.sh'} || exit 9; echo ok"
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr
    assert "installing" not in out.stdout and stamp.read_text() == before


def test_the_import_rules_hold(tmp_path):
    """services/ is torch-free and never imports training/ (DESIGN.md), checked by import-linter;
    a module that breaks the rule is caught."""
    out = subprocess.run(["lint-imports"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "0 broken" in out.stdout, out.stdout + out.stderr
    shutil.copytree(REPO / "services", tmp_path / "services", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "training", tmp_path / "training", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "services" / "leak.py").write_text("import torch\n")
    out = subprocess.run(["lint-imports"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode != 0 and "services.leak -> torch" in out.stdout, out.stdout + out.stderr



def test_a_dead_service_is_restarted_while_the_others_keep_serving(tmp_path):
    """The main job's supervision (deploy/supervise.py → supervisord) on two real services: the
    filter's processes are killed; the attributes service stays ready the whole time, and the
    filter is serving again on its own (under honcho, one death stopped all five)."""
    import httpx
    import psutil

    from tests import servers

    ports = servers.free_ports(4)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "FACEGEN_STATE": str(tmp_path), "BENTOML_DO_NOT_TRACK": "true", "FACEGEN_GRPC_HOST": "127.0.0.1",
           "FACEGEN_FILTER_HTTP_PORT": str(ports[0]), "FACEGEN_FILTER_GRPC_PORT": str(ports[1]),
           "FACEGEN_ATTRIBUTES_HTTP_PORT": str(ports[2]), "FACEGEN_ATTRIBUTES_GRPC_PORT": str(ports[3])}
    conf = subprocess.run([sys.executable, str(DEPLOY / "supervise.py"), "--out", str(tmp_path), "--only", "filter,attributes"],
                          capture_output=True, text=True, check=True).stdout.strip()
    sup = subprocess.Popen([str(Path(sys.executable).parent / "supervisord"), "-c", conf], env=env, cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)

    def ready(port: int) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait(port: int, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not ready(port):
            assert sup.poll() is None and time.monotonic() < end, (tmp_path / "logs" / "filter.log").read_text()[-2000:]
            time.sleep(0.5)

    try:
        wait(ports[0], 120)
        wait(ports[2], 120)
        main = psutil.Process(sup.pid)
        filter_procs = [c for c in main.children() if f"{ports[0]}" in " ".join(c.cmdline())]
        assert len(filter_procs) == 1
        victims = [filter_procs[0], *filter_procs[0].children(recursive=True)]
        for v in victims:
            v.kill()
        killed_at, attributes_up = time.monotonic(), []
        while not ready(ports[0]):
            attributes_up.append(ready(ports[2]))
            assert time.monotonic() - killed_at < 120, "the filter was not restarted"
            time.sleep(0.5)
        assert attributes_up and all(attributes_up)
        assert sup.poll() is None
    finally:
        os.killpg(sup.pid, signal.SIGTERM)
        try:
            sup.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(sup.pid, signal.SIGKILL)
