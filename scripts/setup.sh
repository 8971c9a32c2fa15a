#!/usr/bin/env bash
# Installs what keyhop's demo, tests and benchmarks run against, when it is missing, so that the
# README's two commands (`./dev demo`, `./dev test`) work on a machine that has only the Rust
# toolchain. Used by ./dev; CI gets the same set-up through `./dev test`.
#
#   bash scripts/setup.sh [--dry-run] [build] [redis] [etcd] [chromium] [clients] [bench]
#
#   build    a C compiler and linker (cargo links with `cc`; rustup does not install one)
#   redis    redis-server, redis-sentinel, redis-cli, redis-benchmark; openssl (the TLS tests
#            make their certificates with it)
#   etcd     etcd, the fleet's shared slot map (the fleet tests and `keyhop demo`)
#   chromium a headless browser for the dashboard test (tests/dashboard.rs drives it through
#            puppeteer-core); on macOS the brew cask, untested
#   clients  python3 + node and the third-party clients the compatibility tests drive
#            (scripts/install-test-clients.sh, into target/test-clients)
#   bench    twemproxy's nutcracker, the load benchmark's comparison proxy
#
# Packages come from the platform's package manager: apt-get (Debian/Ubuntu), dnf (Fedora/RHEL) or
# brew (macOS); as root directly, otherwise through sudo. --dry-run prints what would be installed
# and installs nothing. Redis and etcd services that a package install starts are stopped and
# disabled again: keyhop's demo and tests start their own servers on free ports, and a forgotten
# system Redis on 6379 (or etcd on 2379) is not what a developer asked for.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

dry_run=0
wanted=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    build | redis | etcd | chromium | clients | bench) wanted+=("$arg") ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup: unknown argument '$arg' (expected build, redis, etcd, chromium, clients, bench or --dry-run)" >&2; exit 2 ;;
  esac
done
[ ${#wanted[@]} -gt 0 ] || wanted=(build redis etcd chromium clients bench)

say() { echo "setup: $*" >&2; }
has() { command -v "$1" >/dev/null 2>&1; }
# Fedora names the binary chromium-browser; the macOS cask puts no binary on PATH.
has_program() {
  case "$1" in
    chromium) has chromium || has chromium-browser || [ -x /Applications/Chromium.app/Contents/MacOS/Chromium ] ;;
    *) has "$1" ;;
  esac
}

manager=""
if has apt-get; then manager=apt-get
elif has dnf; then manager=dnf
elif has brew; then manager=brew
fi

# Package names per manager for one missing program.
package_for() {
  case "$manager:$1" in
    apt-get:cc) echo build-essential ;;
    apt-get:redis-server) echo redis-server ;;
    apt-get:redis-sentinel) echo redis-sentinel ;;
    apt-get:redis-cli | apt-get:redis-benchmark) echo redis-tools ;;
    apt-get:nutcracker) echo nutcracker ;;
    apt-get:openssl | dnf:openssl | brew:openssl) echo openssl ;;
    apt-get:etcd) echo etcd-server ;;
    dnf:etcd | brew:etcd) echo etcd ;;
    apt-get:chromium | dnf:chromium) echo chromium ;;
    brew:chromium) echo chromium-cask ;; # installed with --cask below
    dnf:cc) echo gcc ;;
    dnf:redis-*) echo redis ;;
    dnf:nutcracker) echo "" ;; # not packaged there
    brew:cc) echo "" ;;        # comes with the Xcode command line tools
    brew:redis-*) echo redis ;;
    brew:nutcracker) echo twemproxy ;;
    *) echo "" ;;
  esac
}

missing=()
for want in "${wanted[@]}"; do
  case "$want" in
    build) has cc || missing+=(cc) ;;
    redis) for bin in redis-server redis-sentinel redis-cli redis-benchmark openssl; do has "$bin" || missing+=("$bin"); done ;;
    etcd) has etcd || missing+=(etcd) ;;
    chromium) has_program chromium || missing+=(chromium) ;;
    bench) has nutcracker || missing+=(nutcracker) ;;
  esac
done

packages=()
unpackaged=()
for bin in ${missing[@]+"${missing[@]}"}; do
  pkg="$(package_for "$bin")"
  if [ -z "$pkg" ]; then
    unpackaged+=("$bin")
  else
    case " ${packages[*]-} " in *" $pkg "*) ;; *) packages+=("$pkg") ;; esac
  fi
done

if [ ${#unpackaged[@]} -gt 0 ]; then
  if [ " ${unpackaged[*]} " = " nutcracker " ]; then
    say "nutcracker (twemproxy) is not packaged for ${manager:-this platform}: the load benchmark will skip it"
  else
    say "cannot install ${unpackaged[*]} here (no apt-get, dnf or brew found): install them, then run again"
    exit 1
  fi
fi

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" = 0 ] || [ "$manager" = brew ]; then
    "$@"
  elif has sudo; then
    sudo "$@"
  else
    say "installing needs root and there is no sudo: run as root: $*"
    exit 1
  fi
}

install_packages() {
  case "$manager" in
    apt-get)
      as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null ;;
    dnf) as_root dnf install -y -q "$@" ;;
    brew)
      for pkg in "$@"; do
        case "$pkg" in
          chromium-cask) brew install --cask chromium ;;
          *) brew install "$pkg" ;;
        esac
      done ;;
  esac
}

if [ ${#packages[@]} -gt 0 ]; then
  say "missing: ${missing[*]}"
  if [ $dry_run = 1 ]; then
    echo "would run: $manager install ${packages[*]}"
  else
    say "$manager install ${packages[*]}"
    install_packages "${packages[@]}"
    case " ${packages[*]} " in
      *" redis-server "* | *" redis-sentinel "* | *" redis "*)
        for svc in redis-server redis-sentinel redis; do
          if has systemctl && systemctl is-active "$svc" >/dev/null 2>&1; then
            as_root systemctl disable --now "$svc" >/dev/null 2>&1 || true
            say "stopped and disabled the packaged $svc service (the demo and tests start their own)"
          fi
        done ;;
    esac
    # Only the packaged service is stopped, never etcd processes by name: tests run their own.
    case " ${packages[*]} " in
      *" etcd-server "* | *" etcd "*)
        if has systemctl && as_root systemctl disable --now etcd >/dev/null 2>&1; then
          say "stopped and disabled the packaged etcd service (the demo and tests start their own)"
        elif has service && as_root service etcd stop >/dev/null 2>&1; then
          say "stopped the packaged etcd service (the demo and tests start their own)"
        fi ;;
    esac
    for bin in ${missing[@]+"${missing[@]}"}; do
      case " ${unpackaged[*]-} " in *" $bin "*) continue ;; esac
      has_program "$bin" || { say "$bin is still missing after installing ${packages[*]}"; exit 1; }
    done
  fi
fi

for want in "${wanted[@]}"; do
  if [ "$want" = clients ]; then
    if [ $dry_run = 1 ]; then
      echo "would run: bash scripts/install-test-clients.sh"
    else
      bash "$root/scripts/install-test-clients.sh"
    fi
  fi
done

if [ ${#packages[@]} -eq 0 ] && [ $dry_run = 1 ]; then
  echo "nothing to install"
fi
