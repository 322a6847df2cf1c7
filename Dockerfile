# Builds both binaries; the same image runs the API (`switchyard-api`) and the worker
# (`switchyard-worker`), chosen by the container command.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p switchyard-api -p switchyard-worker \
 && cp target/release/switchyard-api target/release/switchyard-worker /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 switchyard
COPY --from=build /usr/local/bin/switchyard-api /usr/local/bin/switchyard-worker /usr/local/bin/
USER switchyard
ENV SWITCHYARD_LISTEN=0.0.0.0:8080 SWITCHYARD_LOG_FORMAT=json SWITCHYARD_DATA_DIR=/tmp/switchyard
EXPOSE 8080
CMD ["switchyard-api"]
