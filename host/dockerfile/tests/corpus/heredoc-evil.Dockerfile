FROM alpine:3.20
RUN <<USER
FROM evil:latest
USER
