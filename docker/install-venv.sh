#!/bin/sh
# Used inside Dockerfile.node's build stages only.
#   install-venv.sh deps [EXTRA...]  create /opt/distcluster and install the dependencies
#                                     pyproject.toml lists (plus the optional groups named)
#   install-venv.sh project           install the project itself, compile it, drop pip
# Two steps so that a source change rebuilds only the second layer.
set -eu
venv=/opt/distcluster
case "$1" in
deps)
    shift
    python3 -m venv "$venv"
    python3 - "$@" >/tmp/requirements.txt <<'PY'
import sys
import tomllib

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
wanted = list(project["dependencies"])
for extra in sys.argv[1:]:
    wanted += project["optional-dependencies"][extra]
print("\n".join(wanted))
PY
    "$venv/bin/pip" install --no-cache-dir --requirement /tmp/requirements.txt
    ;;
project)
    "$venv/bin/pip" install --no-cache-dir --no-deps .
    "$venv/bin/python" -m compileall -q "$venv/lib"
    # pip and setuptools are build tools: the final stages copy the environment without them.
    "$venv/bin/pip" uninstall --yes --quiet setuptools pip
    ;;
*)
    echo "usage: install-venv.sh deps [EXTRA...] | project" >&2
    exit 2
    ;;
esac
