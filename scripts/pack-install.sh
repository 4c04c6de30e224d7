#!/usr/bin/env bash
# install.sh of a labctl pack (`labctl pack`), for a machine where labctl is
# not installed yet and that has no network: extract the pack into an empty
# directory and run this script from there.
#
#   mkdir lab && tar -xf labctl-pack-0.1.0.tar -C lab && lab/install.sh
#
# It checks every member against MANIFEST.sha256 before anything else,
# creates a venv ($LABCTL_VENV, default ./venv), installs labctl from wheels/
# with no package index, loads the images into the Docker engine (the one
# the docker CLI talks to: DOCKER_HOST, or the default socket), and runs
# `labctl doctor`. It needs python3 (3.11, with venv), sha256sum, xz and the
# docker CLI; all are Debian packages a Docker host normally has.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
venv=${LABCTL_VENV:-$here/venv}
python=${PYTHON:-python3}

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

for tool in sha256sum xz docker "$python"; do
  command -v "$tool" >/dev/null || die "$tool is not installed; install it (Debian: apt-get install ${tool/sha256sum/coreutils})"
done
[ -f MANIFEST.sha256 ] || die "no MANIFEST.sha256 here; run install.sh from the directory the pack was extracted into"

say "checking every member against MANIFEST.sha256..."
if ! failed=$(sha256sum --check --strict --quiet MANIFEST.sha256 2>&1); then
  first=$(printf '%s\n' "$failed" | grep -m 1 ': FAILED' || printf '%s' "$failed" | head -n 1)
  case "$first" in
    *"FAILED open or read") die "member ${first%%: FAILED*} is missing; get a fresh copy of the pack" ;;
    *": FAILED") die "member ${first%%: FAILED*} is damaged (sha256 mismatch); get a fresh copy of the pack" ;;
    *) die "MANIFEST.sha256 is damaged ($first); get a fresh copy of the pack" ;;
  esac
fi
# Every file here must be listed (but what this script and labctl write: the venv, runs/).
listed=$(cut -c67- MANIFEST.sha256 | sort)
present=$(find . \( -path ./venv -o -path ./runs -o -path "./${venv#"$here"/}" \) -prune -o -type f \
  ! -name MANIFEST.sha256 -print | sed 's|^\./||' | sort)
extra=$(comm -13 <(printf '%s\n' "$listed") <(printf '%s\n' "$present") | head -n 1)
[ -z "$extra" ] || die "member $extra is not in the manifest; get a fresh copy of the pack"
say "all $(printf '%s\n' "$listed" | wc -l) members match"

say "creating the venv $venv and installing labctl from wheels/ (no index)..."
"$python" -m venv "$venv" || die "$python -m venv failed; install python3-venv (Debian)"
"$venv/bin/pip" install --quiet --no-index --find-links wheels labctl \
  || die "pip could not install labctl from wheels/ (they are for the Python version and machine that packed: see their names)"

say "loading the images into the engine (${DOCKER_HOST:-the default engine}); a minute or two..."
xz -dcv images.tar.xz | docker load || die "docker load failed; check the engine with \`docker info\`"

say "labctl doctor:"
status=0
"$venv/bin/labctl" doctor || status=$?
say "next: $venv/bin/labctl up scenario-partition; the students' folder is $here/handout, the docs $here/docs"
exit "$status"
