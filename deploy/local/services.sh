# shellcheck shell=bash
#
# Helpers shared by deploy/local/run.sh and .ci/run: install PostgreSQL and
# RabbitMQ from Debian's packages when they are missing, start them when they
# are not answering, and wait until they do. Services already running are
# reused as they are. Source this file; it defines functions only.

# Debian keeps the RabbitMQ and PostgreSQL admin tools in sbin.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

herald_log() { printf '==> %s\n' "$*" >&2; }
herald_die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Runs a command as root: directly, or through sudo.
herald_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        herald_die "'$*' needs root and sudo is not installed; run this script as root"
    fi
}

HERALD_APT_UPDATED=0
# Installs Debian packages (non-interactively).
herald_apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        herald_die "missing $*, and this is not a Debian-like system with apt-get: install them by hand"
    if [ "$HERALD_APT_UPDATED" -eq 0 ]; then
        herald_log "apt-get update"
        herald_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        HERALD_APT_UPDATED=1
    fi
    herald_log "apt-get install $*"
    herald_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# True when a TCP port on 127.0.0.1 accepts connections.
herald_port_open() {
    timeout 2 bash -c "</dev/tcp/127.0.0.1/$1" >/dev/null 2>&1
}

herald_have_postgres() {
    command -v pg_ctlcluster >/dev/null 2>&1 && command -v psql >/dev/null 2>&1 &&
        command -v pg_isready >/dev/null 2>&1
}

herald_have_rabbitmq() {
    command -v rabbitmq-server >/dev/null 2>&1 && command -v rabbitmqctl >/dev/null 2>&1
}

# Installs postgresql and/or rabbitmq-server if their programs are missing.
herald_install_services() {
    local need=()
    herald_have_postgres || need+=(postgresql)
    herald_have_rabbitmq || need+=(rabbitmq-server)
    if [ "${#need[@]}" -gt 0 ]; then
        herald_apt_install "${need[@]}"
    fi
}

herald_postgres_ready() {
    pg_isready -h 127.0.0.1 -p 5432 -q >/dev/null 2>&1
}

# Starts the local PostgreSQL cluster unless it answers; waits up to 60 s.
herald_ensure_postgres() {
    if herald_postgres_ready; then
        herald_log "PostgreSQL answers on 127.0.0.1:5432; reusing it"
        return 0
    fi
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    [ -n "$version" ] ||
        herald_die "PostgreSQL is installed but has no cluster in /etc/postgresql; create one with: pg_createcluster --start 15 main"
    herald_log "starting PostgreSQL $version/main"
    herald_as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
        herald_log "pg_ctlcluster did not start it cleanly; waiting for it anyway"
    local i
    for i in $(seq 1 120); do
        herald_postgres_ready && {
            herald_log "PostgreSQL is ready"
            return 0
        }
        sleep 0.5
    done
    herald_die "PostgreSQL does not answer on 127.0.0.1:5432 after 60 s; see /var/log/postgresql/"
}

# Starts RabbitMQ unless AMQP answers on 5672; waits up to 120 s.
herald_ensure_rabbitmq() {
    if herald_port_open 5672; then
        herald_log "RabbitMQ answers on 127.0.0.1:5672; reusing it"
        return 0
    fi
    herald_log "starting RabbitMQ (rabbitmq-server -detached)"
    herald_as_root rabbitmq-server -detached ||
        herald_log "rabbitmq-server -detached failed; waiting in case it is starting already"
    local i
    for i in $(seq 1 24); do
        # Fails at once while the Erlang node is not up yet, so retry.
        if herald_as_root rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1; then
            break
        fi
        sleep 5
    done
    for i in $(seq 1 60); do
        herald_port_open 5672 && {
            herald_log "RabbitMQ is ready"
            return 0
        }
        sleep 1
    done
    herald_die "RabbitMQ does not answer on 127.0.0.1:5672; see /var/log/rabbitmq/"
}

# Runs psql against the local server as user postgres.
herald_psql() {
    psql -h 127.0.0.1 -p 5432 -U postgres -v ON_ERROR_STOP=1 "$@"
}

# Creates database $1 unless it exists.
herald_ensure_database() {
    local name=$1
    if [ "$(herald_psql -d postgres -Atqc "select 1 from pg_database where datname = '$name'")" = 1 ]; then
        herald_log "database $name exists"
    else
        herald_log "creating database $name"
        herald_psql -d postgres -qc "create database \"$name\""
    fi
}

# The versions of grpcio and grpcio-tools that the Python client example's
# test (tests/tests/clients.rs) generates its stubs with and calls through.
# PyPI has Linux wheels of them for CPython 3.11 (Debian 12's python3, and
# pyenv's on the development machines), so pip builds nothing.
HERALD_GRPCIO_VERSION=1.85.4
# The OpenAPI validator tests/tests/openapi.rs checks docs/openapi.json and
# the JSON door's answers with.
HERALD_OPENAPI_VALIDATOR_VERSION=0.9.0

# herald_pip_ensure PROBE PACKAGE...: installs PACKAGEs with pip for the
# python3 first on PATH unless the Python statement PROBE already runs there.
herald_pip_ensure() {
    local probe=$1
    shift
    local python
    python=$(command -v python3)
    if python3 -c "$probe" >/dev/null 2>&1; then
        herald_log "$* already there for $python"
        return
    fi
    # Debian's own python3 has no pip until python3-pip is installed.
    python3 -m pip --version >/dev/null 2>&1 || herald_apt_install python3-pip
    herald_log "pip install $* for $python"
    # Debian's python3 is marked externally managed (PEP 668), which makes
    # pip refuse; this machine is for building and testing Herald only, so
    # the modules go into it all the same.
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
        python3 -m pip install -q "$@"
}

# Installs Debian's Chromium and its WebDriver (chromium-driver) for the
# browser tests (tests/tests/browser.rs, tests/tests/console.rs), each only
# if missing. The tests start them headless with profiles of their own.
herald_install_browser() {
    local need=()
    command -v chromium >/dev/null 2>&1 || need+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
    if [ "${#need[@]}" -gt 0 ]; then
        herald_apt_install "${need[@]}"
    fi
    herald_log "browser: $(chromium --version 2>/dev/null | head -n 1); $(chromedriver --version 2>/dev/null | head -n 1)"
}

# Installs what tests/tests/clients.rs runs the examples of docs/clients/
# with, each only if missing: curl, PHP with its curl extension and Node
# from Debian's packages, and grpcio and grpcio-tools (and, for
# tests/tests/openapi.rs, openapi-spec-validator) for the python3 that
# comes first on PATH, because that is the one the test starts (with pyenv
# it is pyenv's, not Debian's).
herald_install_client_tools() {
    local need=()
    command -v curl >/dev/null 2>&1 || need+=(curl)
    if ! command -v php >/dev/null 2>&1; then
        need+=(php-cli php-curl)
    elif ! php -r 'exit(extension_loaded("curl") ? 0 : 1);' >/dev/null 2>&1; then
        need+=(php-curl)
    fi
    command -v node >/dev/null 2>&1 || need+=(nodejs)
    command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
    if [ "${#need[@]}" -gt 0 ]; then
        herald_apt_install "${need[@]}"
    fi
    local python
    python=$(command -v python3)
    herald_pip_ensure 'import grpc, grpc_tools.protoc' "grpcio==$HERALD_GRPCIO_VERSION" \
        "grpcio-tools==$HERALD_GRPCIO_VERSION"
    herald_pip_ensure 'import openapi_spec_validator, openapi_schema_validator' \
        "openapi-spec-validator==$HERALD_OPENAPI_VALIDATOR_VERSION"
    herald_log "client tools: $(curl --version | head -n 1 | cut -d' ' -f1-2)," \
        "PHP $(php -r 'echo PHP_VERSION;'), Node $(node --version)," \
        "$("$python" --version) with grpcio $(python3 -c 'import grpc; print(grpc.__version__)')"
}
