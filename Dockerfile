# nself-audit: a static Go binary in a small image.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=0.1.0
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/nself-audit ./cmd/nself-audit

FROM alpine:3.20
RUN addgroup -S -g 10001 audit && adduser -S -D -H -u 10001 -G audit audit \
 && mkdir -p /data && chown audit:audit /data && chmod 0700 /data
COPY --from=build /out/nself-audit /usr/local/bin/nself-audit
# Inside a container the service must listen on every interface for the
# port mapping to reach it; the compose file maps it to 127.0.0.1 only.
ENV HOST=0.0.0.0 \
    PORT=3843 \
    NSELF_AUDIT_DATA_DIR=/data
USER audit
EXPOSE 3843
VOLUME ["/data"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD wget -q -O /dev/null http://127.0.0.1:3843/health || exit 1
ENTRYPOINT ["/usr/local/bin/nself-audit"]
