FROM busybox
ONBUILD RUN --mount=type=cache,target=/c echo hi
ONBUILD COPY . /app
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo", "a b"] trailing
RUN [ "echo", "not json" 
LABEL a=1 "b c"="d e"
ENV OLD style value
VOLUME ["/data", "/logs"]
STOPSIGNAL SIGTERM
