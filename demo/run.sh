#!/usr/bin/env bash
# The stls toolkit demo: build, make a CA and a server certificate (demo/certs), serve a
# small program with tlsd on loopback, talk to it with tlsc and with
# openssl s_client, and say what happened. Exits non-zero if anything failed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
fail=0
bad() { printf 'demo: FAILED: %s\n' "$*" >&2; fail=1; }

step "building (cargo build --release --workspace)"
cargo build --release --workspace
bin=${CARGO_TARGET_DIR:-$root/target}/release
for b in tlsd tlsc; do
  [ -x "$bin/$b" ] || { echo "demo: $bin/$b was not built" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/stls-demo.XXXXXX")
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "certificates (ECDSA P-256): demo/certs, as make certs"
demo/certs "$tmp"
say "(removed at the end: \`make certs\` makes the same set in certs/ to keep, CERTDIR=dir elsewhere)"
say "CA:     $(openssl x509 -in "$tmp/ca.pem" -noout -subject)"
say "server: $(openssl x509 -in "$tmp/server.pem" -noout -subject), $(openssl x509 -in "$tmp/server.pem" -noout -ext subjectAltName | tail -n 1 | sed 's/^ *//')"

# The served program: reads one line, answers with a greeting and what
# tlsd told it about the session. It knows nothing about TLS.
cat >"$tmp/greet" <<'EOF'
#!/bin/sh
IFS= read -r name || exit 1
printf 'hello, %s: this is %s with %s\n' "$name" "${SSL_PROTOCOL:-?}" "${SSL_CIPHER:-?}"
EOF
chmod +x "$tmp/greet"

step "server: tlsd on 127.0.0.1"
export CERTFILE="$tmp/server.pem" KEYFILE="$tmp/server.key"
: >"$tmp/server.log"
# STLS_DEMO_NO_UCSPI=1 forces the fallback listener (to test it).
have() { [ -z "${STLS_DEMO_NO_UCSPI:-}" ] && command -v "$1" >/dev/null 2>&1; }
if have tcpserver; then
  # -1 prints the port tcpserver bound; port 0 lets the kernel choose.
  # -v logs each connection's end with tlsd's wait status.
  say "tcpserver -1 -v -RHl0 127.0.0.1 0 tlsd -v2 -- greet"
  tcpserver -1 -v -RHl0 127.0.0.1 0 "$bin/tlsd" -v2 -- "$tmp/greet" \
    >"$tmp/port" 2>"$tmp/server.log" </dev/null &
  server_pid=$!
else
  # No ucspi-tcp: a tiny listener that does what tcpserver does (the
  # accepted socket on fd 0 and 1 of tlsd, one process per connection).
  say "tcpserver not found: using a small python3 listener"
  python3 - "$bin/tlsd" -v2 -- "$tmp/greet" >"$tmp/port" 2>"$tmp/server.log" <<'EOF' &
import os, signal, socket, sys
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    pid = os.fork()
    if pid == 0:
        os.dup2(c.fileno(), 0)
        os.dup2(c.fileno(), 1)
        os.execv(sys.argv[1], sys.argv[1:])
    c.close()
EOF
  server_pid=$!
fi
unset CERTFILE KEYFILE
port=
for _ in $(seq 1 100); do
  port=$(head -n 1 "$tmp/port" 2>/dev/null || true)
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.05
done
if [ -z "$port" ]; then
  cat "$tmp/server.log" >&2
  echo "demo: the server did not start" >&2
  exit 1
fi
say "listening on 127.0.0.1:$port (pid $server_pid)"

export CAFILE="$tmp/ca.pem"

step "client 1: tcpclient + tlsc, prog form (the app talks on fd 6 and 7)"
# tlsc verifies localhost against the certificate, then runs the app.
app='printf "tlsc\n" >&7; exec 7>&-; IFS= read -r reply <&6;
printf "reply: %s\n" "$reply"; printf "client saw: %s %s\n" "$SSL_PROTOCOL" "$SSL_CIPHER"'
if have tcpclient; then
  say "tcpclient -RHl0 127.0.0.1 $port tlsc -k localhost -- sh -c '...'"
  set +e
  out=$(timeout 20 tcpclient -RHl0 127.0.0.1 "$port" "$bin/tlsc" -k localhost -- sh -c "$app" 2>&1)
  rc=$?
  set -e
  say "$out"
  say "exit code: $rc"
  [ "$rc" -eq 0 ] || bad "tcpclient + tlsc exited $rc"
  case $out in *"reply: hello, tlsc: this is TLSv1."*) ;; *) bad "tcpclient + tlsc: no greeting" ;; esac
else
  say "tcpclient not found: skipped (install ucspi-tcp)"
fi

step "client 2: tlsc ADDR PORT, io form (netcat with TLS)"
say "echo io | tlsc -k localhost 127.0.0.1 $port"
set +e
out=$(echo io | timeout 20 "$bin/tlsc" -k localhost 127.0.0.1 "$port" 2>&1)
rc=$?
set -e
say "reply: $out"
say "exit code: $rc"
[ "$rc" -eq 0 ] || bad "tlsc ADDR PORT exited $rc"
case $out in "hello, io: this is TLSv1."*) ;; *) bad "tlsc ADDR PORT: no greeting" ;; esac

step "client 3: openssl s_client (a peer that is not ours)"
say "echo openssl | openssl s_client -quiet -verify_return_error -CAfile ca.pem -verify_hostname localhost -connect 127.0.0.1:$port"
set +e
out=$(echo openssl | timeout 20 openssl s_client -quiet -verify_return_error \
  -CAfile "$tmp/ca.pem" -servername localhost -verify_hostname localhost \
  -connect "127.0.0.1:$port" 2>"$tmp/s_client.err")
rc=$?
set -e
say "reply: $out"
say "exit code: $rc"
if grep -qi 'unexpected eof\|error' "$tmp/s_client.err"; then
  sed 's/^/s_client: /' "$tmp/s_client.err"
  bad "openssl s_client reported an error"
fi
[ "$rc" -eq 0 ] || bad "openssl s_client exited $rc"
case $out in "hello, openssl: this is TLSv1."*) ;; *) bad "openssl s_client: no greeting" ;; esac

step "client 4: an untrusted server must be refused"
say "CAFILE=(a CA that did not sign the server) tlsc -k localhost 127.0.0.1 $port"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$tmp/other.key" -out "$tmp/other.pem" -days 2 -subj "/CN=other CA" 2>/dev/null
set +e
out=$(echo nobody | CAFILE="$tmp/other.pem" timeout 20 "$bin/tlsc" -k localhost 127.0.0.1 "$port" 2>&1)
rc=$?
set -e
say "$out"
say "exit code: $rc (97 expected: handshake or verification failure)"
[ "$rc" -eq 97 ] || bad "tlsc against an untrusted server exited $rc, not 97"

step "server log (tlsd -v2 under the listener)"
sleep 0.2
# tcpserver reports raw wait statuses: show them as tlsd's exit codes.
awk '/^tcpserver: end [0-9]+ status [0-9]+$/ {
       s = $5; if (s % 256) printf "  tlsd (pid %s) killed by signal %d\n", $3, s % 128
       else printf "  tlsd (pid %s) exited %d\n", $3, s / 256; next }
     /^tcpserver: (status:|pid|ok) / { next }
     { print "  " $0 }' "$tmp/server.log"

step "result"
if [ "$fail" -ne 0 ]; then
  say "demo: something failed (see above)"
  exit 1
fi
say "demo: everything worked"
