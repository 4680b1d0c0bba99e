FROM alpine:3.20
ARG SRC=https://example.com/b.tar.gz
ADD https://example.com/a.tar.gz /tmp/
ADD HTTPS://EXAMPLE.COM/UP.tgz git@github.com:org/repo.git /opt/
ADD --checksum=sha256:abc git://example.com/r.git#main /src
ADD $SRC /tmp/b/
ADD local.tar /tmp/
COPY github.com/org/repo ./ssh-ish /dst/
COPY ["ssh://host/x", "/y"]
ONBUILD ADD http://example.com/late /late
