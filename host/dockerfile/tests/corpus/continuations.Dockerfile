FROM \
    alpine:3.20
RUN apk add --no-cache \
# a comment inside the continuation
    curl \

    git \
  # an indented comment
    jq
RUN echo start \
FROM trusted
