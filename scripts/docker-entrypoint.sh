#!/bin/sh
# The container's entry point: `castgate serve` only with an admin token.
#
# In a container, requests from the host arrive from Docker's bridge, not
# from loopback, so the admin role (the API's writes, /api/events) has no
# one it is open to without a token: the image asks for one instead of
# starting with an API nobody can use. A config file (-c / CASTGATE_CONFIG)
# may hold the credentials instead; then it is not checked here.
set -eu
if [ "${1:-serve}" = serve ] \
  && [ -z "${CASTGATE_ADMIN_TOKEN:-}" ] \
  && [ -z "${CASTGATE_JWT_SECRET:-}" ] \
  && [ -z "${CASTGATE_CONFIG:-}" ]; then
  case " $* " in
    *" -c "* | *" --config "* | *" --config="*) ;;
    *)
      echo "castgate: set CASTGATE_ADMIN_TOKEN for the API's writes, e.g." >&2
      echo "  docker run -e CASTGATE_ADMIN_TOKEN=\$(openssl rand -hex 24) ..." >&2
      echo "(or CASTGATE_JWT_SECRET, or a config file with -c / CASTGATE_CONFIG)" >&2
      exit 2
      ;;
  esac
fi
exec castgate "$@"
