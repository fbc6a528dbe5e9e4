# streamgate container: build in the official Rust image, run from a slim Debian as a non-root user.
#   docker build -t streamgate .
#   docker run --rm -p 50051:50051 -e STREAMGATE_REDIS_URL=redis://redis:6379 streamgate
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
    STREAMGATE_LOG_FORMAT=json
EXPOSE 50051
ENTRYPOINT ["streamgate"]
CMD ["serve"]
