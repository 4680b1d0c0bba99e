# syntax=docker/dockerfile:1.4
FROM alpine:3.20
RUN <<EOF
echo hello
FROM evil
EOF
COPY <<-CONF /etc/app.conf
	key=value
	FROM evil2
	CONF
RUN <<"A" cat - && <<'B' sh
$NOT_EXPANDED
A
FROM evil3
B
CMD ["true"]
