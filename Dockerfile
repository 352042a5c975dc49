# Multi-stage build: compile in the Rust image, run in a small Debian image
# as a non-root user. Build from the repository root:
#   docker build -t sluice .
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY app app
COPY topologies topologies
COPY schemas schemas
COPY migrations migrations
RUN cargo build --release --locked --bin sluice \
 && strip target/release/sluice

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
USER 10001
# /metrics, /healthz and /readyz
EXPOSE 9464
ENV SLUICE_LOG_FORMAT=json
ENTRYPOINT ["sluice"]
CMD ["run"]
