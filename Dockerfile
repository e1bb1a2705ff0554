# Sluice service image: API + dashboard + scheduler + pipelines (`sluice serve`).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[kafka,postgres,s3,mqtt,sql,onnx]"

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 sluice
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER sluice
WORKDIR /home/sluice
ENV SLUICE_HOME=/data
VOLUME ["/data"]
EXPOSE 5000
# Binding beyond loopback requires API keys (SLUICE_API_KEYS or a keys file).
ENTRYPOINT ["sluice"]
CMD ["serve", "--host", "0.0.0.0", "--port", "5000"]
