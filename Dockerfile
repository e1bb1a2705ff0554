# Sluice service image: API + dashboard + scheduler + pipelines (`sluice serve`).
# Runs as uid 10001 with a read-only root filesystem: SLUICE_HOME (/data) and /tmp are the
# only writable paths (volumes in docker-compose.yml and kubernetes/deployment.yaml).
FROM python:3.11-slim AS build
# a C compiler for the JSON lines extension (native/); the final image does not need one
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md hatch_build.py ./
COPY native ./native
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[kafka,postgres,s3,mqtt,sql,onnx]"

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 sluice \
    && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
WORKDIR /home/sluice
ENV SLUICE_HOME=/data PYTHONDONTWRITEBYTECODE=1
VOLUME ["/data"]
EXPOSE 5000
# Binding beyond loopback requires API keys (SLUICE_API_KEYS or a keys file).
ENTRYPOINT ["sluice"]
CMD ["serve", "--host", "0.0.0.0", "--port", "5000"]
