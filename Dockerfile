# syntax=docker/dockerfile:1
# The worker and dashboard image: one static-enough `chronos` binary on a distroless base.
# ECS runs `chronos worker` (the worker service) or `chronos dashboard` (the dashboard service);
# infra/docker-compose.yml runs every other piece from it too.
#
#   docker build -t chronos .
#
# Layers: cargo-chef builds the dependencies from the lock file alone, so a change to Chronos's
# own code rebuilds only the last crates, not the AWS SDK.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json -p chronos-cli
COPY . .
RUN cargo build --release --locked -p chronos-cli --bin chronos \
    && install -m 0755 target/release/chronos /chronos

# glibc and libgcc only (the binary links them dynamically); no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /chronos /usr/local/bin/chronos
# Inside a container the listeners must face the network (the load balancer, compose's ports).
ENV CHRONOS_API_ADDR=0.0.0.0:8080 \
    CHRONOS_DASHBOARD_ADDR=0.0.0.0:8081
EXPOSE 8080 8081
# The distroless `nonroot` user, by number so a runtime can tell it is not root without the image's
# /etc/passwd.
# Nothing in the image is writable by it.
USER 65532:65532
# SIGTERM drains a worker: no new claims, running attempts finish within CHRONOS_SHUTDOWN_GRACE_MS,
# the rest go straight back to the queue.
STOPSIGNAL SIGTERM
# Redis answers PING (the dashboard's task definition adds --http .../healthz).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/chronos", "health"]
ENTRYPOINT ["/usr/local/bin/chronos"]
CMD ["worker"]
