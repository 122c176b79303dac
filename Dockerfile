# fhir-bridge: the API is served by gunicorn, started by `fhir-bridge serve` beside the background jobs.
FROM python:3.11-slim

RUN useradd --system --home-dir /data --create-home bridge
WORKDIR /app
COPY pyproject.toml setup.cfg README.md ./
COPY anchoring ./anchoring
COPY bridge ./bridge
COPY adapters ./adapters
COPY mappings ./mappings
RUN pip install --no-cache-dir .

USER bridge
ENV FHIR_BRIDGE_DATA_DIR=/data \
    FHIR_BRIDGE_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)" || exit 1
CMD ["fhir-bridge", "serve"]
