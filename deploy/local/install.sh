#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh Debian machine: MariaDB (and a JDK and
# Maven if missing), this package with its test extras, and the Kafka broker jars.
# Idempotent: when everything is in place it prints nothing and takes about a second.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo_root=$(pwd)
kafka_pom=deploy/local/kafka-pom.xml
kafka_libs=.cache/kafka/libs
pip_marker=.cache/pip-install.sha256

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when apt does not know the packages yet.
    if ! apt-cache show "$@" >/dev/null 2>&1; then
        apt-get update -qq
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_system_packages() {
    local missing=()
    have mariadbd || missing+=(mariadb-server mariadb-client)
    have java || missing+=(openjdk-17-jre-headless)
    have mvn || missing+=(maven)
    have prometheus || missing+=(prometheus)  # tests/test_prometheus.py: prometheus, promtool
    if [ ${#missing[@]} -gt 0 ]; then
        echo "install.sh: apt-get install ${missing[*]}"
        apt_install "${missing[@]}"
    fi
}

install_python_package() {
    # Reinstall when pyproject.toml changed or the editable install points at another clone.
    local want location
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    location=$(python3 -P - <<'PY' 2>/dev/null || true
import importlib.metadata as md, json
url = json.loads(md.distribution("deltaforge-py").read_text("direct_url.json") or "{}")["url"]
print(url.removeprefix("file://"))
PY
)
    if [ "$location" = "$repo_root" ] && [ "$(cat "$pip_marker" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    echo "install.sh: pip install -e '.[test]'"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
    mkdir -p "$(dirname "$pip_marker")"
    echo "$want" > "$pip_marker"
}

fetch_kafka_jars() {
    # The marker holds the pom's hash, so a version bump in the pom fetches again.
    local want marker="$kafka_libs/.complete"
    want=$(sha256sum "$kafka_pom" | cut -d' ' -f1)
    if [ "$(cat "$marker" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    echo "install.sh: fetching Kafka broker jars into $kafka_libs"
    rm -rf "$kafka_libs"
    mkdir -p "$kafka_libs"
    # Maven 3.8 prints colour codes even in batch mode; strip them so the output stays clean.
    mvn -q -B -f "$kafka_pom" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$repo_root/$kafka_libs" 2>&1 \
        | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^$/d'
    echo "$want" > "$marker"
}

install_system_packages
install_python_package
fetch_kafka_jars
