# Multi-stage build of the `crosstrade` server.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin crosstrade

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/crosstrade --create-home crosstrade
COPY --from=build /src/target/release/crosstrade /usr/local/bin/crosstrade
USER crosstrade
# 8080: the public port. 9090: the admin port (/metrics), for the monitoring network only; set
# CROSSTRADE_ADMIN_LISTEN=0.0.0.0:9090 to reach it from outside the container.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/crosstrade"]
CMD ["serve"]
