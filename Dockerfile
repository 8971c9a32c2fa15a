# syntax=docker/dockerfile:1
# keyhop container image: a Rust build stage and a slim Debian runtime running as a non-root user.
#
#   docker build -t keyhop .
#   docker run -p 6380:6380 -p 9121:9121 -v "$PWD/keyhop.toml:/etc/keyhop/keyhop.toml:ro" keyhop
#
# In the mounted config, listen on all interfaces of the container and keep the admin port at
# 9121 (the HEALTHCHECK below asks it):
#   listen = "0.0.0.0:6380"
#   admin_listen = "0.0.0.0:9121"
# See docs/operations.md. scripts/docker-smoke.sh builds and smoke-tests it where an engine runs.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target dir between builds (BuildKit); the binary is
# copied out because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin keyhop \
    && install -m 0755 target/release/keyhop /usr/local/bin/keyhop

FROM debian:bookworm-slim
# No extra packages: the health check uses bash's /dev/tcp instead of curl.
RUN groupadd --system --gid 10001 keyhop \
    && useradd --system --uid 10001 --gid keyhop --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin keyhop \
    && mkdir -p /etc/keyhop
COPY --from=build /usr/local/bin/keyhop /usr/local/bin/keyhop
COPY examples/static.toml /etc/keyhop/keyhop.example.toml
# The binary runs on this base image and the bundled example is valid, or the build fails.
RUN ["/usr/local/bin/keyhop", "check", "--config", "/etc/keyhop/keyhop.example.toml"]
USER 10001:10001
EXPOSE 6380 9121
# Healthy = /readyz answers 200: not draining and every group's master answers PING.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9121 && printf 'GET /readyz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# SIGTERM drains clients within shutdown_grace_ms (default 5 s); `docker stop` waits 10 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/keyhop"]
CMD ["--config", "/etc/keyhop/keyhop.toml"]
