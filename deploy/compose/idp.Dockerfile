# The test OpenID Provider (tests/idp/server.js, the certified `oidc-provider` package) for the
# docker-compose stack. Build context: the repository root (see docker-compose.yaml).
# Its users are the test users (alice@example.com / alice-password, ...): never expose it.
FROM node:20-alpine

WORKDIR /idp
COPY tests/idp/package.json tests/idp/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error
COPY tests/idp/server.js ./

USER node
ENV IDP_HOST=0.0.0.0 \
    IDP_PORT=9400
EXPOSE 9400
CMD ["node", "server.js"]
