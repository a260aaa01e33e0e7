# Shared by the benchmark scripts (sourced, not run).

# free_port: a loopback port nobody uses (TCP and UDP).
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && ! { command -v ss >/dev/null && ss -Huan "sport = :$p" | grep -q .; }; then
      echo "$p"; return
    fi
  done
}
