# Analysis Corp's app: testenv/scenario/app's app.js (Node.js with pg from
# npm), which is the build context. BASE_IMAGE as in
# bank_corp/postgres.dockerfile: Node.js comes from Debian either way.
#
# pg: a context that has node_modules (make app-deps ran npm ci there) gives
# them as they are (pg is plain JavaScript); else npm ci runs here, with
# Debian's npm, which is then removed.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN if [ ! -d node_modules/pg ]; then \
      apt-get update \
   && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends npm ca-certificates \
   && npm ci --no-audit --no-fund --omit=dev \
   && apt-get purge -y --auto-remove npm \
   && rm -rf /var/lib/apt/lists/* /root/.npm; \
    fi
USER nobody
CMD ["node", "app.js"]
