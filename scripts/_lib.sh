# Shared by scripts/demo and scripts/test: make the environment and the services they need.
# shellcheck shell=bash

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf '\033[31mError: %s\033[0m\n' "$*" >&2; exit 1; }

ensure_env() {
    if ! command -v uv >/dev/null 2>&1; then
        say "Installing uv (the Python package manager this project uses)"
        python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv \
            || die "could not install uv; install it (pip install uv) and run this again"
        export PATH="$HOME/.local/bin:$PATH"
    fi
    say "Creating the Python 3.11 environment (.venv) from uv.lock"
    uv sync --frozen --python 3.11 --quiet
}

ensure_postgres() {
    local host=${PGHOST:-127.0.0.1} port=${PGPORT:-5432}
    if pg_isready -q -h "$host" -p "$port" 2>/dev/null; then return; fi
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        say "Starting PostgreSQL"
        for version in /etc/postgresql/*; do
            pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main start 2>/dev/null || true
        done
        for _ in $(seq 1 30); do pg_isready -q -h "$host" -p "$port" && return; sleep 1; done
    fi
    die "PostgreSQL is not reachable at $host:$port. Install it (apt-get install postgresql) or point DATABASE_URL at a server."
}

ensure_redis() {
    local url=${REDIS_URL:-redis://127.0.0.1:6379/15}
    if .venv/bin/python -c "import redis,sys; redis.Redis.from_url(sys.argv[1]).ping()" "$url" 2>/dev/null; then
        return
    fi
    if command -v redis-server >/dev/null 2>&1; then
        say "Starting Redis"
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
            --logfile "${TMPDIR:-/tmp}/redis-billing.log" >/dev/null
        for _ in $(seq 1 30); do
            .venv/bin/python -c "import redis,sys; redis.Redis.from_url(sys.argv[1]).ping()" "$url" 2>/dev/null && return
            sleep 1
        done
    fi
    die "Redis is not reachable at $url. Install it (apt-get install redis-server) or set REDIS_URL."
}

apt_install() {
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        die "missing system packages: $*. Install them with your package manager and run this again."
    fi
    say "Installing system packages: $*"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_pdf_libraries() {
    # WeasyPrint renders with Pango; the fonts make PDFs readable.
    .venv/bin/python -c "import weasyprint" 2>/dev/null \
        || apt_install libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core
}

ensure_chromium() {
    local browser=${CHROMIUM_PATH:-/usr/bin/chromium}
    [ -x "$browser" ] || apt_install chromium
    [ -x "$browser" ] || die "Chromium not found at $browser (set CHROMIUM_PATH)."
}
