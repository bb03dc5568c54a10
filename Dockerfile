# syntax=docker/dockerfile:1
# Multi-stage: build a wheel with its dependencies, then a slim runtime as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip build
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY docs/openapi.yaml ./docs/openapi.yaml
# The symlink gateway/data/openapi.yaml → docs/openapi.yaml is resolved into the wheel.
RUN python -m build --wheel --outdir /wheels . \
 && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/*.whl

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    GATEWAY_ENV=production GATEWAY_HOST=0.0.0.0 GATEWAY_PORT=8080 \
    GATEWAY_KEYS_DIR=/run/gateway/keys GATEWAY_LOG_FORMAT=json
RUN groupadd --system gateway && useradd --system --gid gateway --home /nonexistent \
    --shell /usr/sbin/nologin gateway \
 && mkdir -p /run/gateway/keys && chown -R gateway:gateway /run/gateway && chmod 700 /run/gateway/keys
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels cq-one-code-gateway && rm -rf /wheels
USER gateway
EXPOSE 8080
# Production keys are mounted at /run/gateway/keys (0600 files) — never baked into the image.
HEALTHCHECK --interval=10s --timeout=2s --start-period=10s --retries=3 \
  CMD python -c "import os,urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_PORT','8080'), timeout=2).status == 200 else 1)"
STOPSIGNAL SIGTERM
ENTRYPOINT ["gateway"]
CMD ["serve"]
