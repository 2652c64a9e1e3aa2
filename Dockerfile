# One image for the gateway (the default command) and the workers (`vfg workers`).
# Build: docker build -t voice-function-gateway .   Run: docker compose up (compose.yaml).

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY gateway ./gateway
COPY shared ./shared
COPY workers ./workers
# A regular (not editable) install: the runtime stage needs only the venv, not the sources or the build tools.
RUN /opt/venv/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8080
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin vfg
COPY --from=build /opt/venv /opt/venv
USER 10001
WORKDIR /home/vfg
EXPOSE 8080
# No curl in the slim image: Python asks /healthz. Workers serve no HTTP: their compose service disables this.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=2)"]
CMD ["vfg", "gateway"]
