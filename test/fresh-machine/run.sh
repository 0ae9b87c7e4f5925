#!/usr/bin/env bash
# The fresh-machine test: the README's two commands, `npm ci && npm start`, in a clean Debian 12 root
# that has nothing but Node and npm (as a new user's machine), up to the ready line and one
# `wrenn sandbox exec … -- echo hello`.
#
#   test/fresh-machine/run.sh full    the whole first start: apt installs the host packages, the guest
#                                     kernel is fetched and the image built inside the fresh root
#   test/fresh-machine/run.sh quick   the same, with this host's built image and kernel bind-mounted
#                                     read-only (the image build is skipped; apt, npm ci, start, exec run)
#
# The root is `debootstrap --variant=minbase bookworm` plus this host's node and npm, cached under
# $WRENN_CI_CACHE/fresh-root/<hash of that recipe> (default /var/cache/wrenn-ci) and copied for each run,
# so every run starts from the same clean state. It is entered with private mount and PID namespaces
# (pivot_root, fresh /proc; /sys, /dev and the cgroup tree bound in, as a container runtime would) but
# in the host's network namespace: apt inside uses the Debian mirror and npm the registry, and the
# stack itself listens only on loopback, on free ports, with sandbox egress off and its own network
# prefix and slot range, which are removed afterwards. Everything inside dies with the PID namespace.
# Needs root. Output: the whole log on stdout; exit 0 only when `hello` came back from a sandbox.
set -euo pipefail
mode=${1:-quick}
case "$mode" in full | quick) ;; *) echo "usage: $0 full|quick" >&2; exit 2 ;; esac
if [ "$(id -u)" -ne 0 ]; then echo "$0 must run as root (debootstrap, namespaces, mounts)" >&2; exit 1; fi
repo=$(cd "$(dirname "$0")/../.." && pwd)
cache=${WRENN_CI_CACHE:-/var/cache/wrenn-ci}
files_root=${AGENT_FILES_ROOTDIR:-/var/lib/wrenn}
t0=$SECONDS
say() { printf '\n--> %s (%ss)\n' "$1" "$((SECONDS - t0))"; }

# The recipe of the clean root; its hash names the cached copy.
mirror=$(node -e '
  const fs = require("node:fs");
  let text = "";
  for (const f of ["/etc/apt/sources.list", ...(fs.existsSync("/etc/apt/sources.list.d") ? fs.readdirSync("/etc/apt/sources.list.d").map((n) => `/etc/apt/sources.list.d/${n}`) : [])]) {
    try { text += `${fs.readFileSync(f, "utf8")}\n`; } catch {}
  }
  const m = /^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(https?:\/\/\S+\/debian)\/?(?:\s|$)/m.exec(text);
  process.stdout.write(m ? m[1] : "http://deb.debian.org/debian");
')
node_bin=$(readlink -f "$(command -v node)")
npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
recipe="debootstrap --variant=minbase bookworm $mirror | node $(node --version) | npm $(npm --version) | recipe v1"
key=$(printf '%s' "$recipe" | sha256sum | cut -c1-16)
base="$cache/fresh-root/$key"
if [ ! -d "$base/root" ]; then
  say "building the clean root ($recipe) into $base (cached for the next runs)"
  partial="$base.partial-$$"
  rm -rf "$partial"
  mkdir -p "$partial"
  debootstrap --variant=minbase bookworm "$partial/root" "$mirror" >"$partial/debootstrap.log" 2>&1 || {
    tail -20 "$partial/debootstrap.log"
    echo "debootstrap failed; log: $partial/debootstrap.log" >&2
    exit 1
  }
  # Node and npm as a user installs them (here: this host's own).
  install -D -m 0755 "$node_bin" "$partial/root/usr/bin/node"
  mkdir -p "$partial/root/usr/lib/node_modules"
  cp -a "$npm_dir" "$partial/root/usr/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$partial/root/usr/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$partial/root/usr/bin/npx"
  printf '%s\n' "$recipe" >"$partial/recipe"
  rm -rf "$base"
  mv "$partial" "$base"
  # Older recipes' roots are of no further use.
  find "$cache/fresh-root" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
else
  say "clean root from cache: $base ($(cat "$base/recipe"))"
fi

run=$(mktemp -d "$cache/fresh-run.XXXXXX")
root="$run/root"
prefix="f$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n' | cut -c1-5)"
ns_pid=""
cleanup() {
  local code=$?
  if [ -n "$ns_pid" ] && kill -0 "$ns_pid" 2>/dev/null; then
    # unshare runs with --kill-child: when it dies, the PID namespace's first process gets SIGKILL, and
    # with it every process in the namespace. (unshare --fork ignores SIGTERM while it waits: KILL it.)
    kill -KILL "$ns_pid" 2>/dev/null || true
    wait "$ns_pid" 2>/dev/null || true
  fi
  # What the agent made in the host's network namespace and cgroup tree (its prefix only).
  for l in $(ip -o link show 2>/dev/null | sed -nE "s/^[0-9]+: (${prefix}-[^:@]+).*/\1/p"); do ip link del "$l" 2>/dev/null || true; done
  nft delete table inet "wrenn_${prefix}" 2>/dev/null || true
  # The agent's group and every sandbox group under it (those are named by sandbox, not by prefix).
  for g in $(find /sys/fs/cgroup -type d -name "*${prefix}*" -prune 2>/dev/null); do
    find "$g" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  if [ "$code" -ne 0 ] && [ -d "$root/work/wrenn/.wrenn" ]; then
    # Kept for reading after a failure: wrenn up's logs (apt, image build, agent).
    rm -rf "$cache/fresh-last-failure"
    mkdir -p "$cache/fresh-last-failure"
    cp -a "$root/work/wrenn/.wrenn/logs" "$root/work/wrenn/.wrenn/agent.log" "$cache/fresh-last-failure/" 2>/dev/null || true
    echo "wrenn up's logs from inside the fresh root: $cache/fresh-last-failure/"
  fi
  rm -rf "$run"
  exit "$code"
}
trap cleanup EXIT INT TERM

say "copying the clean root and this checkout (tracked and new files, no node_modules) into $root"
cp -a --reflink=auto "$base/root" "$root"
mkdir -p "$root/work/wrenn"
(cd "$repo" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -C "$root/work/wrenn" -xf -
cp /etc/resolv.conf "$root/etc/resolv.conf"
# dpkg without an fsync per file, as Debian's own container images do: the root is thrown away after
# the run, and on a busy CI machine the syncs were most of apt's minutes.
echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/wrenn-ci-unsafe-io"
# WRENN_FRESH_DROP_PACKAGE=attr takes a package out of the copied list (scripts/host-packages.json in the
# fresh root only): how to show that this test catches a package missing from the list.
if [ -n "${WRENN_FRESH_DROP_PACKAGE:-}" ]; then
  node -e '
    const fs = require("node:fs");
    const [file, drop] = process.argv.slice(1);
    const list = JSON.parse(fs.readFileSync(file, "utf8"));
    list.packages = list.packages.filter((p) => p.package !== drop);
    fs.writeFileSync(file, JSON.stringify(list, null, 2));
  ' "$root/work/wrenn/scripts/host-packages.json" "$WRENN_FRESH_DROP_PACKAGE"
  say "dropped $WRENN_FRESH_DROP_PACKAGE from the fresh root's scripts/host-packages.json (a demonstration: this run should fail)"
fi
# A machine whose HTTPS goes through an intercepting proxy trusts its CA through NODE_EXTRA_CA_CERTS:
# that is the network's set-up, not Wrenn's, so the same file is put where the variable points.
if [ -n "${NODE_EXTRA_CA_CERTS:-}" ] && [ -f "$NODE_EXTRA_CA_CERTS" ]; then
  install -D -m 0644 "$NODE_EXTRA_CA_CERTS" "$root$NODE_EXTRA_CA_CERTS"
fi
mkdir -p "$root$files_root"
if [ "$mode" = quick ]; then
  mkdir -p "$root$files_root/images" "$root$files_root/kernels"
fi

# Free loopback ports and a free slot range, chosen on the host (the network is shared).
read -r api_port agent_port < <(node -e '
  const net = require("node:net");
  const one = () => new Promise((r) => { const s = net.createServer(); s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => r(p)); }); });
  Promise.all([one(), one()]).then((p) => console.log(p.join(" ")));
')
slot_cidr=$(node -e '
  const { execFileSync } = require("node:child_process");
  const routes = execFileSync("ip", ["-4", "-o", "route", "show", "table", "all"], { encoding: "utf8" });
  for (let i = 0; i < 100; i++) {
    const b = 128 + Math.floor(Math.random() * 120), c = Math.floor(Math.random() * 128) * 2;
    if (!routes.includes(`10.${b}.${c}.`) && !routes.includes(`10.${b}.${c + 1}.`)) { console.log(`10.${b}.${c}.0/23`); process.exit(0); }
  }
  process.exit(1);
')

# What runs inside: exactly the README's two commands, then the printed example's exec.
cat >"$root/fresh-machine-inside.sh" <<INSIDE
#!/bin/sh
set -eu
export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
export WRENN_PORT=$api_port WRENN_AGENT_PORT=$agent_port AGENT_NET_PREFIX=$prefix AGENT_NET_CIDR=$slot_cidr AGENT_EGRESS=off
cd /work/wrenn
echo "--> npm ci"
npm ci --no-audit --no-fund
echo "--> npm start"
# In its own session and process group, which Ctrl-C would signal as a whole (npm does not pass a
# SIGINT sent to it alone on to \`wrenn up\`).
setsid npm start >/tmp/start.log 2>&1 &
start_pid=\$!
tail -n +1 -f /tmp/start.log &
tail_pid=\$!
waited=0
until grep -q '^Wrenn is ready at ' /tmp/start.log; do
  if ! kill -0 \$start_pid 2>/dev/null; then
    sleep 1; kill \$tail_pid 2>/dev/null || true
    echo "FRESH-MACHINE: npm start exited before it was ready"; exit 1
  fi
  waited=\$((waited + 1))
  if [ \$waited -gt 2400 ]; then echo "FRESH-MACHINE: not ready after 20 min"; exit 1; fi
  sleep 0.5
done
sleep 0.5; kill \$tail_pid 2>/dev/null || true
key=\$(sed -n '/^Admin API key/{n;n;s/^ *//;p;q}' /tmp/start.log)
[ -n "\$key" ] || { echo "FRESH-MACHINE: no admin key on screen"; exit 1; }
export WRENN_API_URL=http://127.0.0.1:$api_port WRENN_API_KEY=\$key
echo "--> ./wrenn sandbox create / exec / kill"
id=\$(./wrenn sandbox create -q)
out=\$(./wrenn sandbox exec "\$id" -- echo hello)
echo "exec printed: \$out"
./wrenn sandbox kill "\$id"
[ "\$out" = hello ] || { echo "FRESH-MACHINE: expected hello"; exit 1; }
echo "--> Ctrl-C (SIGINT to npm start's process group)"
node -e "process.kill(-\$start_pid, 'SIGINT')"  # dash cannot signal a group
# A stop that hangs is killed after 120 s (and fails the test below).
( sleep 120; node -e "process.kill(-\$start_pid, 'SIGKILL')" 2>/dev/null ) &
timer=\$!
wait \$start_pid || true
kill \$timer 2>/dev/null || true
grep -E '^(stopping|stopped)' /tmp/start.log || true
grep -q '^stopped$' /tmp/start.log || { echo "FRESH-MACHINE: wrenn up did not stop cleanly on SIGINT"; exit 1; }
echo "FRESH-MACHINE: OK"
INSIDE
chmod +x "$root/fresh-machine-inside.sh"

say "entering the root (private mount and PID namespaces, host network) for: npm ci && npm start (mode $mode)"
extra_binds=""
# npm's download cache (content-addressed, verified by the lockfile's hashes) is shared with this host,
# so `npm ci` inside installs from it rather than fetching ~200 packages again; WRENN_FRESH_NPM_CACHE=0
# fetches everything from the registry instead.
npm_cache=$(npm config get cache 2>/dev/null || true)
if [ "${WRENN_FRESH_NPM_CACHE:-1}" != 0 ] && [ -d "$npm_cache/_cacache" ]; then
  mkdir -p "$root/root/.npm"
  extra_binds+="mount --bind '$npm_cache' '$root/root/.npm';"
fi
if [ "$mode" = quick ]; then
  for d in images kernels; do
    extra_binds+="mount --rbind '$files_root/$d' '$root$files_root/$d'; mount -o remount,bind,ro '$root$files_root/$d';"
  done
fi
unshare --mount --pid --fork --kill-child=SIGKILL --propagation private sh -ec "
  mount --bind '$root' '$root'
  mount -t proc proc '$root/proc'
  mount --rbind /sys '$root/sys'
  mount --rbind /dev '$root/dev'
  mount -t tmpfs -o mode=0755 tmpfs '$root/run'
  mount -t tmpfs -o mode=1777 tmpfs '$root/tmp'
  $extra_binds
  cd '$root'
  mkdir -p .old-root
  pivot_root . .old-root
  umount -l /.old-root
  rmdir /.old-root
  exec /fresh-machine-inside.sh
" &
ns_pid=$!
set +e
wait "$ns_pid"
code=$?
set -e
ns_pid=""
say "fresh-machine test ($mode) finished with exit $code in $((SECONDS - t0))s"
exit "$code"
