# crmdump's container image: the binary, its shared libraries, CA certificates and a non-root
# user on an empty base. Two ways to build it, with one runtime stage:
#
#   docker build -t crmdump .                                  # builds the binary (locked deps)
#   scripts/runtime-rootfs target/release/crmdump target/docker-rootfs
#   docker build --build-arg ROOTFS=prebuilt -t crmdump .       # a binary built on Debian 12
#
# The second is how the image is checked here (scripts/check-image, with podman, pulling
# nothing from a registry).
ARG ROOTFS=build

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin crmdump \
    && scripts/runtime-rootfs target/release/crmdump /rootfs

FROM scratch AS rootfs-build
COPY --from=build /rootfs/ /

FROM scratch AS rootfs-prebuilt
COPY target/docker-rootfs/ /

FROM rootfs-${ROOTFS} AS rootfs

FROM scratch AS runtime
COPY --from=rootfs / /
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    TMPDIR=/tmp
USER 10001:10001
WORKDIR /work
ENTRYPOINT ["/usr/local/bin/crmdump"]
CMD ["--help"]
