# Bank Corp's PostgreSQL. BASE_IMAGE is debian:bookworm-slim on a machine that
# can pull it, or a local Debian image (run.sh's base, made with debootstrap)
# where no registry is reachable: PostgreSQL comes from Debian either way.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "$(ls -d /usr/lib/postgresql/*/bin)" /usr/local/lib/postgresql-bin \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/local/lib/postgresql-bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
HEALTHCHECK --interval=2s --timeout=5s --retries=30 CMD pg_isready -h 127.0.0.1 -U postgres
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
