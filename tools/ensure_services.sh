#!/usr/bin/env bash
# Makes sure MariaDB (127.0.0.1:3306) and Redis (127.0.0.1:6379) are up for the test suite,
# and that systemd-analyze (which checks deploy/systemd), promtool (which checks
# deploy/prometheus, from Debian's prometheus package) and headless Chromium with its
# WebDriver (Debian's chromium and chromium-driver, for the web client's browser tests) are
# installed.
# Installs them with apt-get when missing and running as root; otherwise says what to install.
set -uo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 0.5; done
  return 1
}

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "so-im tests need $1 on 127.0.0.1:$2; install and start it ($3), or run make test as root." >&2
    exit 1
  fi
}

apt_install() {
  [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq >/dev/null; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! port_open 3306; then
  if [ ! -x /usr/sbin/mariadbd ]; then
    need_root MariaDB 3306 "apt-get install mariadb-server"
    apt_install mariadb-server
  fi
  need_root MariaDB 3306 "mariadbd --user=mysql"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  wait_port 3306 || { echo "MariaDB did not come up on 127.0.0.1:3306" >&2; exit 1; }
fi

if ! port_open 6379; then
  if ! command -v redis-server >/dev/null; then
    need_root Redis 6379 "apt-get install redis-server"
    apt_install redis-server
  fi
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null
  wait_port 6379 || { echo "Redis did not come up on 127.0.0.1:6379" >&2; exit 1; }
fi
if ! command -v systemd-analyze >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "so-im tests need systemd-analyze (tests/test_deploy.py); apt-get install systemd, or run make test as root." >&2
    exit 1
  fi
  apt_install systemd
fi
if ! command -v promtool >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "so-im tests need promtool (tests/fabric/test_observability.py); apt-get install prometheus, or run make test as root." >&2
    exit 1
  fi
  apt_install --no-install-recommends prometheus
fi
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "so-im tests need headless Chromium (tests/web/test_browser.py); apt-get install chromium chromium-driver, or run make test as root." >&2
    exit 1
  fi
  apt_install --no-install-recommends chromium chromium-driver
fi
echo "services: MariaDB 127.0.0.1:3306 and Redis 127.0.0.1:6379 are up; systemd-analyze, promtool, chromium and chromedriver are installed"
