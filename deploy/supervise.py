"""Write the supervisord configuration of the local deployment from deploy/Procfile.

supervisord (the `supervisor` package) runs each service of the Procfile, restarts one that dies
while the others keep serving (a service that fails during start-up is retried with a growing
delay: 1, 2, 3 … s), and stops them all together. The Procfile stays the one list of the
services' commands (the Kubernetes manifests are rendered separately, by render.py).

    python deploy/supervise.py --out runs/main [--only filter,attributes]
    supervisord -c runs/main/supervisord.conf        # foreground; logs in runs/main/logs/
    supervisorctl -c runs/main/supervisord.conf status
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
REPO = DEPLOY.parent
START_SECONDS = 20  # up this long = started; a service that exits sooner is retried with back-off
START_RETRIES = 10


def procfile(path: Path = DEPLOY / "Procfile") -> dict[str, str]:
    """name → command of each `name: command` line (comments and blank lines skipped)."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            out[name.strip()] = command.strip()
    return out


def config(out: Path, only: list[str] | None = None) -> str:
    logs = out / "logs"
    procs = procfile()
    unknown = set(only or ()) - set(procs)
    if unknown:
        raise SystemExit(f"no service {', '.join(sorted(unknown))} in deploy/Procfile (it has {', '.join(procs)})")
    parts = [f"""[supervisord]
nodaemon=true
logfile={logs / 'supervisord.log'}
pidfile={out / 'supervisord.pid'}
childlogdir={logs}

[unix_http_server]
file={out / 'supervisor.sock'}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{out / 'supervisor.sock'}
"""]
    for name, command in procs.items():
        if only and name not in only:
            continue
        # bash expands the Procfile's $VARIABLES from the environment supervisord was started with
        parts.append(f"""[program:{name}]
command=bash -c {shlex.quote(command).replace('%', '%%')}
directory={REPO}
autostart=true
autorestart=true
startsecs={START_SECONDS}
startretries={START_RETRIES}
stopasgroup=true
killasgroup=true
stopwaitsecs=20
redirect_stderr=true
stdout_logfile={logs / (name + '.log')}
stdout_logfile_maxbytes=20MB
stdout_logfile_backups=2
""")
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the config, its socket and logs/")
    ap.add_argument("--only", default="", help="comma-separated services (default: all of the Procfile)")
    args = ap.parse_args()
    out = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    conf = out / "supervisord.conf"
    conf.write_text(config(out, [s for s in args.only.split(",") if s] or None))
    print(conf)


if __name__ == "__main__":
    main()
