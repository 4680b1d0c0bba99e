FROM golang:1.22 AS build
FROM alpine AS Tools
FROM debian:12
RUN --mount=type=cache,id=../../x,target=/cache \
    --mount=type=bind,from=build,source=/link,target=/l \
    --mount='type=bind,from=tools,"source=/a,b",target=/q' \
    --mount=type=bind,from=0,target=/zero \
    --mount=type=bind,from=ghcr.io/evil/img:1,target=/e,rw \
    --mount=type=secret,id=tok,required \
    --mount=type=ssh \
    --mount=type=tmpfs,target=/tmp,size=64m \
    make
COPY --from=TOOLS /bin/tool /bin/
COPY --from=1 /bin/x /bin/
COPY --from=nginx:latest /etc/nginx/nginx.conf /etc/
COPY --from=2 /nope /nope
FROM scratch
FROM SCRATCH AS final
COPY --from=Build /out /out
