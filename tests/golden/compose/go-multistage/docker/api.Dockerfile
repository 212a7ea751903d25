FROM golang:1.22 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -o /out/api ./cmd/api

FROM scratch
COPY --from=build /out/api /usr/local/bin/api
COPY migrations /migrations
USER 65532:65532
