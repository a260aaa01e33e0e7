# castgate in a container: built with the repository's own setup script on
# Debian 12, run on Debian 12 slim with only the FFmpeg runtime libraries.
#
#   docker build -t castgate .
#   docker run --rm -p 8080:8080 -p 8189:8189/udp -p 8189:8189/tcp -v castgate-rec:/recordings \
#     -e CASTGATE_ANNOUNCE=203.0.113.10 -e CASTGATE_ADMIN_TOKEN=$(openssl rand -hex 24) \
#     -e CASTGATE_PUBLISH_TOKEN=$(openssl rand -hex 24) castgate
#
# An admin token is required (the entry point refuses to serve without one):
# from outside the container no client is "this machine", so without a token
# nobody could use the API's writes. Publishing stays open unless
# CASTGATE_PUBLISH_TOKEN is set (README "Security").
#
# The media port is UDP and must be published as such (`-p 8189:8189/udp`),
# and as TCP too for ICE-TCP clients whose networks block UDP (`-p 8189:8189/tcp`);
# CASTGATE_ANNOUNCE is the address clients reach (the host's public or LAN IP),
# since the container's own address is private to Docker (NAT 1:1).

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The same packages CI and the README commands install.
COPY scripts/setup.sh scripts/setup.sh
RUN bash scripts/setup.sh
COPY . .
RUN cargo build --release --locked --bin castgate

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libavcodec59 libavformat59 libavutil57 libswresample4 libswscale6 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/castgate castgate \
 && mkdir -p /recordings \
 && chown castgate:castgate /recordings
COPY --from=build /src/target/release/castgate /usr/local/bin/castgate
COPY scripts/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
USER castgate
WORKDIR /var/lib/castgate
VOLUME ["/recordings"]
# GLIBC_TUNABLES: memory freed when sessions end goes back to the system
# (README "Deploying").
ENV CASTGATE_HTTP_LISTEN=0.0.0.0:8080 \
    CASTGATE_UDP_LISTEN=0.0.0.0:8189 \
    CASTGATE_RECORD_DIR=/recordings \
    CASTGATE_LOG_FORMAT=json \
    GLIBC_TUNABLES=glibc.malloc.tcache_count=0
EXPOSE 8080/tcp 8189/udp 8189/tcp
# SIGTERM finalizes recordings; give it up to shutdown.timeout_secs (30 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["serve"]
