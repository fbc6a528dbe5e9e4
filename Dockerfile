# streamgate container: build in the official Rust image, run from a slim Debian as a non-root user.
#   docker build -t streamgate .
#   docker run --rm -p 50051:50051 -e STREAMGATE_REDIS_URL=redis://redis:6379 streamgate
# Without STREAMGATE_REDIS_URL it runs on the embedded in-memory store (nothing durable).
# docker-compose.yml runs it with a Redis that keeps an append-only file.
FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
RUN cargo build --release --locked --bin streamgate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home streamgate
COPY --from=build /src/target/release/streamgate /usr/local/bin/streamgate
USER streamgate
ENV STREAMGATE_LISTEN=0.0.0.0:50051 \
    STREAMGATE_METRICS_ADDR=0.0.0.0:9090 \
    STREAMGATE_LOG_FORMAT=json
EXPOSE 50051 9090 8080
# The binary is its own probe: exits 0 while the broker reports SERVING (Redis answers).
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["streamgate", "health", "--server", "127.0.0.1:50051", "--timeout", "3s"]
ENTRYPOINT ["streamgate"]
CMD ["serve"]
