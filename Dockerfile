# towerwatch's image: one image for every process (pipeline, api, simulator); the command picks.
# Built from the lock file, so the native modules (uWebSockets.js, chdb) match the image's
# Node 20 on Debian 12, whatever the host is.
#   docker build -t towerwatch .

FROM node:20-bookworm AS build
WORKDIR /app
COPY package.json package-lock.json ./
# npm install, not npm ci: see bin/setup (chdb's optional libraries for other platforms are
# not in the lock file); every dependency is pinned, so it installs exactly the locked versions.
RUN npm install --no-audit --no-fund
COPY . .
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
ENV NODE_ENV=production TOWERWATCH_DATA_DIR=/var/lib/towerwatch
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
RUN mkdir -p /var/lib/towerwatch && chown node:node /var/lib/towerwatch
USER node
ENTRYPOINT ["node", "dist/bin/towerwatch.js"]
CMD ["--help"]
